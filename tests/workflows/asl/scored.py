"""Resources of scored.json: a Python function, and the Pub/Sub remote function its
`pubsub:ASL_DEV_SCORE` Task calls (hosted by `run`, served by `dev`)."""

from function_flow import remote


def greet(payload):
    return f"hello {payload['name']}"


@remote.function(topic="ASL_DEV_SCORE")
def score(payload, context):
    return {"letters": len(payload["result"]["name"])}


RESOURCES = {"greet": greet}
