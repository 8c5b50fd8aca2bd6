"""The shape of Function Flow's PyPI example: entry points built first,
tasks declared after, `start(job_args=...)`."""
from function_flow import tasks

job = tasks.Job(name='pypi_example', max_parallel_tasks=3)

# Built before any task exists: nothing is checked until first use.
scheduler = job.make_scheduler()
external_event_listener = job.make_external_event_listener()
poller = job.make_poller()


@job.task(task_id='extract')
def extract(task, job):
  return job.get_arguments()['rows']


@job.task(task_id='transform', deps=['extract'])
def transform(task, job):
  return [row * 2 for row in job.get_task_result('extract')]


@job.task(task_id='load', deps=['transform'])
def load(task, job):
  return sum(job.get_task_result('transform'))


def main(request=None):
  del request
  return job.start(job_args={'rows': [1, 2, 3]})
