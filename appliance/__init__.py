"""The appliance: wiring, the CLI, and (later) the web UI, REST API and jobs."""
