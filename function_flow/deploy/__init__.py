"""`function-flow deploy FILE.py`: a workflow file to Cloud Functions 2nd gen, in one command.

plan.py derives what to deploy (pure: the functions, topics and names,
checked), commands.py the gcloud commands in order (steps.py is their
shape), script.py prints them as a bash script (--dry-run and
deploy/deploy.sh), runner.py runs them (subprocess, argv lists), and
source.py builds the directory that is uploaded.
"""
