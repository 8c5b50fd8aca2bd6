"""Function Flow's sample workflow, in its shape, with function_flow's import.

Same tasks, dependencies, remote tasks (remote_topic SAMPLE_REMOTE_TRIGGER
with task_args), BigQuery task returning a BigQueryFuture, `start(event,
context)` entry point and `sample_remote_function(event, context)` that
publishes its own answer with Pub/Sub's client, as Function Flow's sample
has them. Only the import line says function_flow. (The simulated work of
the remote function is one second here instead of thirty.)
"""
import base64
import json
import logging
import time

import google.auth
from google.cloud import bigquery
from google.cloud import pubsub_v1
from function_flow import futures
from function_flow import tasks

example_job = tasks.Job(
    name='test_job', schedule_topic='SCHEDULE', max_parallel_tasks=2)


@example_job.task(task_id='task_1')
def task_1(task: tasks.Task, job: tasks.Job) -> str:
  del task, job
  logging.info('Running task_1.')
  return 'result1'


@example_job.task(task_id='task_2', deps=['task_1'])
def task_2(task: tasks.Task, job: tasks.Job) -> str:
  del task, job
  return 'result2'


@example_job.task(task_id='task_3', deps=['task_1'])
def task_3(task: tasks.Task, job: tasks.Job) -> str:
  del task, job
  return 'result3'


@example_job.task(task_id='task_4', deps=['task_2'])
def task_4(task: tasks.Task, job: tasks.Job) -> str:
  del task, job
  return 'result4'


@example_job.task(task_id='task_5', deps=['task_3', 'task_4'])
def task_5(task: tasks.Task, job: tasks.Job) -> str:
  del task, job
  return 'result5'


@example_job.task(
    task_id='remote_task_1',
    deps=['task_3', 'task_4'],
    remote_topic='SAMPLE_REMOTE_TRIGGER',
    task_args={'region': 'APAC'})
def remote_task_1(task: tasks.Task, job: tasks.Job) -> str:
  del task, job
  # What this returns goes to the remote function.
  return 'resultr1'


@example_job.task(
    task_id='remote_task_2',
    deps=['task_3', 'task_4'],
    remote_topic='SAMPLE_REMOTE_TRIGGER',
    task_args={'region': 'EMEA'})
def remote_task_2(task: tasks.Task, job: tasks.Job) -> dict:
  del task, job
  return {'structured_data_r2': 'structured_value_r2'}


@example_job.task(
    task_id='task_6',
    deps=['task_5', 'remote_task_1', 'remote_task_2'],
    task_args={'dest_table': 'test_dataset.test_table'})
def task_6(task: tasks.Task, job: tasks.Job) -> futures.Future:
  del job
  _, project = google.auth.default()
  destination = f'{project}.{task.task_args["dest_table"]}'
  client = bigquery.Client()
  job_config = bigquery.QueryJobConfig(
      destination=destination,
      use_legacy_sql=False,
      write_disposition=bigquery.job.WriteDisposition.WRITE_TRUNCATE)
  query_job = client.query(
      'SELECT word, word_count FROM `bigquery-public-data.samples.shakespeare` '
      "WHERE corpus = 'hamlet' ORDER BY word_count DESC LIMIT 10",
      job_config=job_config)
  logging.info('Launched bq job %s.', query_job.job_id)
  return futures.BigQueryFuture(query_job.job_id)


scheduler = example_job.make_scheduler()
external_event_listener = example_job.make_external_event_listener()


def start(event, context):
  del event, context
  job_args = {
      'variable': 'my_value',
      'a_number': 1,
      'a_dict': {'a': 1, 'b': 2, 'c': 'three'},
  }
  example_job.start(job_args)
  return json.dumps({'id': example_job.id})


def sample_remote_function(event, context):
  """Works for a while, then publishes the answer Function Flow expects."""
  del context
  args = json.loads(base64.b64decode(event['data']).decode('utf-8'))
  logging.info('Received args: %s', args)
  time.sleep(1)
  _, project = google.auth.default()
  publisher = pubsub_v1.PublisherClient()
  topic_path = publisher.topic_path(project, 'SCHEDULE_EXTERNAL_EVENTS')
  answer = {
      'status': {'code': 0, 'message': 'Everything went well.'},
      'resource': {
          'type': 'remote_function_resource',
          'labels': {'job_id': args['job_id']}
      }
  }
  publisher.publish(topic_path, json.dumps(answer).encode('utf-8')).result()
