"""The example workflow of Function Flow's README, run unchanged.

Two lines differ from the README: the import line, and the BigQuery call in
step3, which is replaced by a local stand-in (`submit_query`) so that the
test needs no cloud project. step3 still returns `futures.BigQueryFuture`,
and the test completes it the way production does: a BigQuery
`jobcompleted` audit-log message delivered to `external_event_listener`.
"""

import json
import uuid

from function_flow import futures, tasks

#: Ids of the "BigQuery jobs" step3 submitted, so the test can complete them.
submitted_queries = []


def submit_query(sql: str) -> str:
    """Local stand-in for `bigquery.Client().query(sql).job_id`."""
    del sql
    job_id = f'bquxjob_{uuid.uuid4().hex[:12]}'
    submitted_queries.append(job_id)
    return job_id


example_job = tasks.Job(name='test_job', schedule_topic='SCHEDULE')


@example_job.task(task_id='step1')
def task1(task: tasks.Task, job: tasks.Job) -> str:
  del task, job  # Unused.
  return 'result1'


@example_job.task(task_id='step2', deps=['step1'])
def task2(task: tasks.Task, job: tasks.Job) -> str:
  del task, job  # Unused.
  return 'result2'


@example_job.task(task_id='step3', deps=['step1'])
def task3(task: tasks.Task, job: tasks.Job) -> futures.Future:
  del task, job  # Unused.
  bq_job_id = submit_query('SELECT 1')
  return futures.BigQueryFuture(bq_job_id)


@example_job.task(task_id='step4', deps=['step2', 'step3'])
def task4(task: tasks.Task, job: tasks.Job) -> str:
  del task  # Unused.
  result2 = job.get_task_result('step2')
  assert result2 == 'result2'
  return 'result4'


scheduler = example_job.make_scheduler()
external_event_listener = example_job.make_external_event_listener()


def start(unused_request):
  example_job.start()
  return json.dumps({'id': example_job.id})
