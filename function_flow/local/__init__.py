"""The deployed topology on one machine: `function-flow dev` and the e2e tests.

- processes.py: child processes in their own process groups, stopped by group id
- emulators.py: the gcloud Firestore and Pub/Sub emulators
- framework.py: one functions-framework server per entry point, with the
  local platform's request timeout (serve.py runs it)
- pubsub.py: topics and push subscriptions on the Pub/Sub emulator
- entry.py: what `function-flow dev`'s functions serve
- dev_functions.py: the functions-framework processes of one dev stack,
  started callback first so the others can be told its URL
- dev_log.py: the one log file of a dev stack, every line tagged by its writer
- stack.py: LocalStack, all of the above assembled for `function-flow dev`
"""
