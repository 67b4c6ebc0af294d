"""The command line: the Hydra job, preflight checks, help, console output, interrupts, the sweep summary."""
