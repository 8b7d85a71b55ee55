"""comfy-stack: run the whole stack locally and talk to it from the command line."""
