"""`pipeline-admin`: operator commands over the dead-letter topic (summary, show, replay).
`cli` parses the command line and runs a command; `scan` reads the DLQ into `record`s;
`replay` checks and re-publishes them; `render` shows records and reports on a terminal;
`kafka` holds the tool's client settings, topic check and error."""
