"""The run folder and what keeps it whole: its layout (`folder`), one process per run (`lock`), and the rule that
a file from outside (a checkpoint's config, a YAML file) is data checked before anything is built (`trust`,
`yaml_bounds`)."""
