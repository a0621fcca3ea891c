"""The training system: the one LightningModule for classification (`classifier`), learning-rate schedules whose
every number has one effect (`schedules`), and the speedrun recipes' tricks outside the network (`tricks`)."""
