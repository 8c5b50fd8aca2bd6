def greet(payload):
    return f"hello {payload['name']}"
RESOURCES = {"greet": greet}
