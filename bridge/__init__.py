"""The agent-facing bridge service and the `dispatch-bridge` command line."""
