"""`stream-pipeline run FOLDER --ray ADDRESS`: recorded videos as Ray tasks (optional extra `cluster`).

Nothing here is imported without `--ray`, and Ray itself only inside `run_on_ray`.
"""
