"""Jobs: what runs on a schedule, not on a request.

`scheduler` elects one leader among the workers and runs the job table with catch-up;
`housekeeping` is the jobs' work, `usage_sync` asks providers what is left on an account,
`backup` writes and restores an instance's archive.
"""
