"""Remote tasks: a task's body result sent to a function elsewhere.

`PubSub(topic)` (Function Flow's `remote_topic=`), `OpenFaaS(name)` and
`Http(url)` say where; the answer becomes the task's result.
"""

from function_flow.remote.targets import Http, OpenFaaS, PubSub

__all__ = ["PubSub", "OpenFaaS", "Http"]
