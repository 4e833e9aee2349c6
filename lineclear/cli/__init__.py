"""The command-line edge: thin commands that read files, call a library function, write files."""
