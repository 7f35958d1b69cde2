"""The admin commands: every change an admin makes, written once.

Each command validates its input (raising `InputError(field, message)`), changes the
database, writes one audit entry, commits, and makes this process's caches of its topic
re-read. The dashboard, the admin API, the CLI, the RovoDev pages and the YAML import only
parse their input, call a command and render its result.
"""
