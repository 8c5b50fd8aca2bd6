#!/usr/bin/env bash
# function-flow deploy samples/main.py --project my-project --region europe-west1: job sample_job, as a script.
# .function_flow/deploy/sample_job (the upload) was built by that command.
set -euo pipefail
export CLOUDSDK_CORE_DISABLE_PROMPTS=1
PROJECT=my-project
REGION=europe-west1
SOURCE=.function_flow/deploy/sample_job

SA=function-flow@"${PROJECT}".iam.gserviceaccount.com

# enable the APIs a deployment uses
gcloud services enable cloudfunctions.googleapis.com run.googleapis.com \
    cloudbuild.googleapis.com \
    artifactregistry.googleapis.com \
    pubsub.googleapis.com \
    firestore.googleapis.com \
    cloudscheduler.googleapis.com \
    secretmanager.googleapis.com \
    logging.googleapis.com \
    iam.googleapis.com \
    --project="${PROJECT}"

# the project number names Pub/Sub's service agent
PROJECT_NUMBER="$(gcloud projects describe "${PROJECT}" --format='value(projectNumber)')"

# the functions' own service account
gcloud iam service-accounts describe "${SA}" --project="${PROJECT}" >/dev/null 2>&1 ||
    gcloud iam service-accounts create function-flow \
    --display-name='function_flow sample_job' \
    --project="${PROJECT}"

# Firestore holds the run state: the one project-wide role
gcloud projects add-iam-policy-binding "${PROJECT}" \
    --member=serviceAccount:"${SA}" \
    --role=roles/datastore.user \
    --condition=None

# the Firestore database
gcloud firestore databases describe --database='(default)' --project="${PROJECT}" >/dev/null 2>&1 ||
    gcloud firestore databases create \
    --database='(default)' \
    --location="${REGION}" \
    --type=firestore-native \
    --project="${PROJECT}"

# old runs expire: TTL policy on runs.expire_at
gcloud firestore fields ttls update expire_at \
    --collection-group=runs \
    --enable-ttl \
    --database='(default)' \
    --async \
    --project="${PROJECT}"

# no index on it: nothing queries it, and an index of ever later times is a write hotspot
gcloud firestore indexes fields update expire_at \
    --collection-group=runs \
    --disable-indexes \
    --database='(default)' \
    --async \
    --project="${PROJECT}"

# old runs expire: TTL policy on triggers.expire_at
gcloud firestore fields ttls update expire_at \
    --collection-group=triggers \
    --enable-ttl \
    --database='(default)' \
    --async \
    --project="${PROJECT}"

# no index on it: nothing queries it, and an index of ever later times is a write hotspot
gcloud firestore indexes fields update expire_at \
    --collection-group=triggers \
    --disable-indexes \
    --database='(default)' \
    --async \
    --project="${PROJECT}"

# old runs expire: TTL policy on deliveries.expire_at
gcloud firestore fields ttls update expire_at \
    --collection-group=deliveries \
    --enable-ttl \
    --database='(default)' \
    --async \
    --project="${PROJECT}"

# no index on it: nothing queries it, and an index of ever later times is a write hotspot
gcloud firestore indexes fields update expire_at \
    --collection-group=deliveries \
    --disable-indexes \
    --database='(default)' \
    --async \
    --project="${PROJECT}"

# old runs expire: TTL policy on tasks.expire_at
gcloud firestore fields ttls update expire_at \
    --collection-group=tasks \
    --enable-ttl \
    --database='(default)' \
    --async \
    --project="${PROJECT}"

# no index on it: nothing queries it, and an index of ever later times is a write hotspot
gcloud firestore indexes fields update expire_at \
    --collection-group=tasks \
    --disable-indexes \
    --database='(default)' \
    --async \
    --project="${PROJECT}"

# old runs expire: TTL policy on slots.expire_at
gcloud firestore fields ttls update expire_at \
    --collection-group=slots \
    --enable-ttl \
    --database='(default)' \
    --async \
    --project="${PROJECT}"

# no index on it: nothing queries it, and an index of ever later times is a write hotspot
gcloud firestore indexes fields update expire_at \
    --collection-group=slots \
    --disable-indexes \
    --database='(default)' \
    --async \
    --project="${PROJECT}"

# old runs expire: TTL policy on context.expire_at
gcloud firestore fields ttls update expire_at \
    --collection-group=context \
    --enable-ttl \
    --database='(default)' \
    --async \
    --project="${PROJECT}"

# no index on it: nothing queries it, and an index of ever later times is a write hotspot
gcloud firestore indexes fields update expire_at \
    --collection-group=context \
    --disable-indexes \
    --database='(default)' \
    --async \
    --project="${PROJECT}"

# the filtered lists of runs, newest first, need an index: job_name, created_at descending
if ! out="$(gcloud firestore indexes composite create \
    --collection-group=runs \
    --query-scope=collection \
    --field-config=field-path=job_name,order=ascending \
    --field-config=field-path=created_at,order=descending \
    --database='(default)' \
    --async \
    --project="${PROJECT}" 2>&1)"; then
  grep -q ALREADY_EXISTS <<<"$out" || { echo "$out" >&2; exit 1; }
fi

# the filtered lists of runs, newest first, need an index: status, created_at descending
if ! out="$(gcloud firestore indexes composite create \
    --collection-group=runs \
    --query-scope=collection \
    --field-config=field-path=status,order=ascending \
    --field-config=field-path=created_at,order=descending \
    --database='(default)' \
    --async \
    --project="${PROJECT}" 2>&1)"; then
  grep -q ALREADY_EXISTS <<<"$out" || { echo "$out" >&2; exit 1; }
fi

# the filtered lists of runs, newest first, need an index: job_name, status, created_at descending
if ! out="$(gcloud firestore indexes composite create \
    --collection-group=runs \
    --query-scope=collection \
    --field-config=field-path=job_name,order=ascending \
    --field-config=field-path=status,order=ascending \
    --field-config=field-path=created_at,order=descending \
    --database='(default)' \
    --async \
    --project="${PROJECT}" 2>&1)"; then
  grep -q ALREADY_EXISTS <<<"$out" || { echo "$out" >&2; exit 1; }
fi

# the HMAC key that signs function_flow's messages, generated once
gcloud secrets describe function-flow-hmac --project="${PROJECT}" >/dev/null 2>&1 ||
    python3 -c 'import secrets; print(secrets.token_urlsafe(48), end="")' |
    gcloud secrets create function-flow-hmac \
    --replication-policy=automatic \
    --data-file=- \
    --project="${PROJECT}"

# only the functions read the key
gcloud secrets add-iam-policy-binding function-flow-hmac \
    --member=serviceAccount:"${SA}" \
    --role=roles/secretmanager.secretAccessor \
    --project="${PROJECT}"

# topic SCHEDULE
gcloud pubsub topics describe SCHEDULE --project="${PROJECT}" >/dev/null 2>&1 ||
    gcloud pubsub topics create SCHEDULE --project="${PROJECT}"

# the functions publish to SCHEDULE
gcloud pubsub topics add-iam-policy-binding SCHEDULE \
    --member=serviceAccount:"${SA}" \
    --role=roles/pubsub.publisher \
    --project="${PROJECT}"

# topic SCHEDULE_EXTERNAL_EVENTS
gcloud pubsub topics describe SCHEDULE_EXTERNAL_EVENTS --project="${PROJECT}" >/dev/null 2>&1 ||
    gcloud pubsub topics create SCHEDULE_EXTERNAL_EVENTS --project="${PROJECT}"

# the functions publish to SCHEDULE_EXTERNAL_EVENTS
gcloud pubsub topics add-iam-policy-binding SCHEDULE_EXTERNAL_EVENTS \
    --member=serviceAccount:"${SA}" \
    --role=roles/pubsub.publisher \
    --project="${PROJECT}"

# topic PRICING_REQUESTS
gcloud pubsub topics describe PRICING_REQUESTS --project="${PROJECT}" >/dev/null 2>&1 ||
    gcloud pubsub topics create PRICING_REQUESTS --project="${PROJECT}"

# the functions publish to PRICING_REQUESTS
gcloud pubsub topics add-iam-policy-binding PRICING_REQUESTS \
    --member=serviceAccount:"${SA}" \
    --role=roles/pubsub.publisher \
    --project="${PROJECT}"

# callback (HTTP), not public
gcloud functions deploy callback \
    --gen2 \
    --region="${REGION}" \
    --runtime=python312 \
    --source="${SOURCE}" \
    --entry-point=callback \
    --trigger-http \
    --no-allow-unauthenticated \
    --service-account="${SA}" \
    --timeout=540s \
    --set-env-vars=FUNCTION_FLOW_BACKEND=gcp,GOOGLE_CLOUD_PROJECT="${PROJECT}",FUNCTION_FLOW_SCHEDULE_TOPIC=SCHEDULE,FUNCTION_FLOW_EVENTS_TOPIC=SCHEDULE_EXTERNAL_EVENTS,FUNCTION_FLOW_FIRESTORE_DATABASE='(default)',FUNCTION_FLOW_RUN_TTL_DAYS=30 \
    --set-secrets=FUNCTION_FLOW_HMAC_KEY=function-flow-hmac:latest \
    --project="${PROJECT}"

# the URL of callback
CALLBACK_URL="$(gcloud functions describe callback \
    --gen2 \
    --region="${REGION}" \
    --format='value(serviceConfig.uri)' \
    --project="${PROJECT}")"

# start (HTTP), not public
gcloud functions deploy start \
    --gen2 \
    --region="${REGION}" \
    --runtime=python312 \
    --source="${SOURCE}" \
    --entry-point=start \
    --trigger-http \
    --no-allow-unauthenticated \
    --service-account="${SA}" \
    --timeout=540s \
    --set-env-vars=FUNCTION_FLOW_BACKEND=gcp,GOOGLE_CLOUD_PROJECT="${PROJECT}",FUNCTION_FLOW_SCHEDULE_TOPIC=SCHEDULE,FUNCTION_FLOW_EVENTS_TOPIC=SCHEDULE_EXTERNAL_EVENTS,FUNCTION_FLOW_FIRESTORE_DATABASE='(default)',FUNCTION_FLOW_RUN_TTL_DAYS=30,FUNCTION_FLOW_CALLBACK_URL="${CALLBACK_URL}" \
    --set-secrets=FUNCTION_FLOW_HMAC_KEY=function-flow-hmac:latest \
    --project="${PROJECT}"

# the URL of start
START_URL="$(gcloud functions describe start \
    --gen2 \
    --region="${REGION}" \
    --format='value(serviceConfig.uri)' \
    --project="${PROJECT}")"

# control (HTTP), not public
gcloud functions deploy control \
    --gen2 \
    --region="${REGION}" \
    --runtime=python312 \
    --source="${SOURCE}" \
    --entry-point=control \
    --trigger-http \
    --no-allow-unauthenticated \
    --service-account="${SA}" \
    --timeout=540s \
    --set-env-vars=FUNCTION_FLOW_BACKEND=gcp,GOOGLE_CLOUD_PROJECT="${PROJECT}",FUNCTION_FLOW_SCHEDULE_TOPIC=SCHEDULE,FUNCTION_FLOW_EVENTS_TOPIC=SCHEDULE_EXTERNAL_EVENTS,FUNCTION_FLOW_FIRESTORE_DATABASE='(default)',FUNCTION_FLOW_RUN_TTL_DAYS=30,FUNCTION_FLOW_CALLBACK_URL="${CALLBACK_URL}" \
    --set-secrets=FUNCTION_FLOW_HMAC_KEY=function-flow-hmac:latest \
    --project="${PROJECT}"

# the URL of control
CONTROL_URL="$(gcloud functions describe control \
    --gen2 \
    --region="${REGION}" \
    --format='value(serviceConfig.uri)' \
    --project="${PROJECT}")"

# poller (HTTP), not public
gcloud functions deploy poller \
    --gen2 \
    --region="${REGION}" \
    --runtime=python312 \
    --source="${SOURCE}" \
    --entry-point=poller \
    --trigger-http \
    --no-allow-unauthenticated \
    --service-account="${SA}" \
    --timeout=540s \
    --set-env-vars=FUNCTION_FLOW_BACKEND=gcp,GOOGLE_CLOUD_PROJECT="${PROJECT}",FUNCTION_FLOW_SCHEDULE_TOPIC=SCHEDULE,FUNCTION_FLOW_EVENTS_TOPIC=SCHEDULE_EXTERNAL_EVENTS,FUNCTION_FLOW_FIRESTORE_DATABASE='(default)',FUNCTION_FLOW_RUN_TTL_DAYS=30,FUNCTION_FLOW_CALLBACK_URL="${CALLBACK_URL}" \
    --set-secrets=FUNCTION_FLOW_HMAC_KEY=function-flow-hmac:latest \
    --project="${PROJECT}"

# the URL of poller
POLLER_URL="$(gcloud functions describe poller \
    --gen2 \
    --region="${REGION}" \
    --format='value(serviceConfig.uri)' \
    --project="${PROJECT}")"

# scheduler (pushed from SCHEDULE), not public
gcloud functions deploy scheduler \
    --gen2 \
    --region="${REGION}" \
    --runtime=python312 \
    --source="${SOURCE}" \
    --entry-point=scheduler \
    --trigger-http \
    --no-allow-unauthenticated \
    --service-account="${SA}" \
    --timeout=540s \
    --set-env-vars=FUNCTION_FLOW_BACKEND=gcp,GOOGLE_CLOUD_PROJECT="${PROJECT}",FUNCTION_FLOW_SCHEDULE_TOPIC=SCHEDULE,FUNCTION_FLOW_EVENTS_TOPIC=SCHEDULE_EXTERNAL_EVENTS,FUNCTION_FLOW_FIRESTORE_DATABASE='(default)',FUNCTION_FLOW_RUN_TTL_DAYS=30,FUNCTION_FLOW_CALLBACK_URL="${CALLBACK_URL}" \
    --set-secrets=FUNCTION_FLOW_HMAC_KEY=function-flow-hmac:latest \
    --project="${PROJECT}"

# the URL of scheduler
SCHEDULER_URL="$(gcloud functions describe scheduler \
    --gen2 \
    --region="${REGION}" \
    --format='value(serviceConfig.uri)' \
    --project="${PROJECT}")"

# external_event_listener (pushed from SCHEDULE_EXTERNAL_EVENTS), not public
gcloud functions deploy external-event-listener \
    --gen2 \
    --region="${REGION}" \
    --runtime=python312 \
    --source="${SOURCE}" \
    --entry-point=external_event_listener \
    --trigger-http \
    --no-allow-unauthenticated \
    --service-account="${SA}" \
    --timeout=540s \
    --set-env-vars=FUNCTION_FLOW_BACKEND=gcp,GOOGLE_CLOUD_PROJECT="${PROJECT}",FUNCTION_FLOW_SCHEDULE_TOPIC=SCHEDULE,FUNCTION_FLOW_EVENTS_TOPIC=SCHEDULE_EXTERNAL_EVENTS,FUNCTION_FLOW_FIRESTORE_DATABASE='(default)',FUNCTION_FLOW_RUN_TTL_DAYS=30,FUNCTION_FLOW_CALLBACK_URL="${CALLBACK_URL}" \
    --set-secrets=FUNCTION_FLOW_HMAC_KEY=function-flow-hmac:latest \
    --project="${PROJECT}"

# the URL of external-event-listener
EXTERNAL_EVENT_LISTENER_URL="$(gcloud functions describe external-event-listener \
    --gen2 \
    --region="${REGION}" \
    --format='value(serviceConfig.uri)' \
    --project="${PROJECT}")"

# regional_pricing (pushed from PRICING_REQUESTS), not public
gcloud functions deploy regional-pricing \
    --gen2 \
    --region="${REGION}" \
    --runtime=python312 \
    --source="${SOURCE}" \
    --entry-point=regional_pricing \
    --trigger-http \
    --no-allow-unauthenticated \
    --service-account="${SA}" \
    --timeout=540s \
    --set-env-vars=FUNCTION_FLOW_BACKEND=gcp,GOOGLE_CLOUD_PROJECT="${PROJECT}",FUNCTION_FLOW_SCHEDULE_TOPIC=SCHEDULE,FUNCTION_FLOW_EVENTS_TOPIC=SCHEDULE_EXTERNAL_EVENTS,FUNCTION_FLOW_FIRESTORE_DATABASE='(default)',FUNCTION_FLOW_RUN_TTL_DAYS=30,FUNCTION_FLOW_CALLBACK_URL="${CALLBACK_URL}" \
    --set-secrets=FUNCTION_FLOW_HMAC_KEY=function-flow-hmac:latest \
    --project="${PROJECT}"

# the URL of regional-pricing
REGIONAL_PRICING_URL="$(gcloud functions describe regional-pricing \
    --gen2 \
    --region="${REGION}" \
    --format='value(serviceConfig.uri)' \
    --project="${PROJECT}")"

# the service account's OIDC tokens may invoke scheduler
gcloud functions add-invoker-policy-binding scheduler \
    --region="${REGION}" \
    --member=serviceAccount:"${SA}" \
    --project="${PROJECT}"

# the service account's OIDC tokens may invoke external-event-listener
gcloud functions add-invoker-policy-binding external-event-listener \
    --region="${REGION}" \
    --member=serviceAccount:"${SA}" \
    --project="${PROJECT}"

# the service account's OIDC tokens may invoke regional-pricing
gcloud functions add-invoker-policy-binding regional-pricing \
    --region="${REGION}" \
    --member=serviceAccount:"${SA}" \
    --project="${PROJECT}"

# the service account's OIDC tokens may invoke poller
gcloud functions add-invoker-policy-binding poller \
    --region="${REGION}" \
    --member=serviceAccount:"${SA}" \
    --project="${PROJECT}"

# Pub/Sub's service agent signs the pushes' OIDC tokens
gcloud iam service-accounts add-iam-policy-binding "${SA}" \
    --member=serviceAccount:service-"${PROJECT_NUMBER}"@gcp-sa-pubsub.iam.gserviceaccount.com \
    --role=roles/iam.serviceAccountTokenCreator \
    --project="${PROJECT}"

# dead-letter topic of scheduler-push
gcloud pubsub topics describe scheduler-dead-letter --project="${PROJECT}" >/dev/null 2>&1 ||
    gcloud pubsub topics create scheduler-dead-letter --project="${PROJECT}"

# Pub/Sub's service agent dead-letters there
gcloud pubsub topics add-iam-policy-binding scheduler-dead-letter \
    --member=serviceAccount:service-"${PROJECT_NUMBER}"@gcp-sa-pubsub.iam.gserviceaccount.com \
    --role=roles/pubsub.publisher \
    --project="${PROJECT}"

# dead-lettered messages are kept for a week, to be read and redriven
gcloud pubsub subscriptions describe scheduler-dead-letter --project="${PROJECT}" >/dev/null 2>&1 ||
    gcloud pubsub subscriptions create scheduler-dead-letter \
    --topic=scheduler-dead-letter \
    --message-retention-duration=7d \
    --expiration-period=never \
    --project="${PROJECT}"

# SCHEDULE -> scheduler: retried with backoff, then dead-lettered
if gcloud pubsub subscriptions describe scheduler-push --project="${PROJECT}" >/dev/null 2>&1; then
  gcloud pubsub subscriptions update scheduler-push \
      --push-endpoint="${SCHEDULER_URL}" \
      --push-auth-service-account="${SA}" \
      --ack-deadline=600 \
      --dead-letter-topic=scheduler-dead-letter \
      --max-delivery-attempts=10 \
      --min-retry-delay=10s \
      --max-retry-delay=600s \
      --expiration-period=never \
      --project="${PROJECT}"
else
  gcloud pubsub subscriptions create scheduler-push \
      --topic=SCHEDULE \
      --push-endpoint="${SCHEDULER_URL}" \
      --push-auth-service-account="${SA}" \
      --ack-deadline=600 \
      --dead-letter-topic=scheduler-dead-letter \
      --max-delivery-attempts=10 \
      --min-retry-delay=10s \
      --max-retry-delay=600s \
      --expiration-period=never \
      --project="${PROJECT}"
fi

# Pub/Sub's service agent acknowledges what it dead-letters
gcloud pubsub subscriptions add-iam-policy-binding scheduler-push \
    --member=serviceAccount:service-"${PROJECT_NUMBER}"@gcp-sa-pubsub.iam.gserviceaccount.com \
    --role=roles/pubsub.subscriber \
    --project="${PROJECT}"

# dead-letter topic of external-event-listener-push
gcloud pubsub topics describe external-event-listener-dead-letter --project="${PROJECT}" >/dev/null 2>&1 ||
    gcloud pubsub topics create external-event-listener-dead-letter --project="${PROJECT}"

# Pub/Sub's service agent dead-letters there
gcloud pubsub topics add-iam-policy-binding external-event-listener-dead-letter \
    --member=serviceAccount:service-"${PROJECT_NUMBER}"@gcp-sa-pubsub.iam.gserviceaccount.com \
    --role=roles/pubsub.publisher \
    --project="${PROJECT}"

# dead-lettered messages are kept for a week, to be read and redriven
gcloud pubsub subscriptions describe external-event-listener-dead-letter \
    --project="${PROJECT}" >/dev/null 2>&1 ||
    gcloud pubsub subscriptions create external-event-listener-dead-letter \
    --topic=external-event-listener-dead-letter \
    --message-retention-duration=7d \
    --expiration-period=never \
    --project="${PROJECT}"

# SCHEDULE_EXTERNAL_EVENTS -> external-event-listener: retried with backoff, then dead-lettered
if gcloud pubsub subscriptions describe external-event-listener-push --project="${PROJECT}" >/dev/null 2>&1; then
  gcloud pubsub subscriptions update external-event-listener-push \
      --push-endpoint="${EXTERNAL_EVENT_LISTENER_URL}" \
      --push-auth-service-account="${SA}" \
      --ack-deadline=600 \
      --dead-letter-topic=external-event-listener-dead-letter \
      --max-delivery-attempts=10 \
      --min-retry-delay=10s \
      --max-retry-delay=600s \
      --expiration-period=never \
      --project="${PROJECT}"
else
  gcloud pubsub subscriptions create external-event-listener-push \
      --topic=SCHEDULE_EXTERNAL_EVENTS \
      --push-endpoint="${EXTERNAL_EVENT_LISTENER_URL}" \
      --push-auth-service-account="${SA}" \
      --ack-deadline=600 \
      --dead-letter-topic=external-event-listener-dead-letter \
      --max-delivery-attempts=10 \
      --min-retry-delay=10s \
      --max-retry-delay=600s \
      --expiration-period=never \
      --project="${PROJECT}"
fi

# Pub/Sub's service agent acknowledges what it dead-letters
gcloud pubsub subscriptions add-iam-policy-binding external-event-listener-push \
    --member=serviceAccount:service-"${PROJECT_NUMBER}"@gcp-sa-pubsub.iam.gserviceaccount.com \
    --role=roles/pubsub.subscriber \
    --project="${PROJECT}"

# dead-letter topic of regional-pricing-push
gcloud pubsub topics describe regional-pricing-dead-letter --project="${PROJECT}" >/dev/null 2>&1 ||
    gcloud pubsub topics create regional-pricing-dead-letter --project="${PROJECT}"

# Pub/Sub's service agent dead-letters there
gcloud pubsub topics add-iam-policy-binding regional-pricing-dead-letter \
    --member=serviceAccount:service-"${PROJECT_NUMBER}"@gcp-sa-pubsub.iam.gserviceaccount.com \
    --role=roles/pubsub.publisher \
    --project="${PROJECT}"

# dead-lettered messages are kept for a week, to be read and redriven
gcloud pubsub subscriptions describe regional-pricing-dead-letter --project="${PROJECT}" >/dev/null 2>&1 ||
    gcloud pubsub subscriptions create regional-pricing-dead-letter \
    --topic=regional-pricing-dead-letter \
    --message-retention-duration=7d \
    --expiration-period=never \
    --project="${PROJECT}"

# PRICING_REQUESTS -> regional-pricing: retried with backoff, then dead-lettered
if gcloud pubsub subscriptions describe regional-pricing-push --project="${PROJECT}" >/dev/null 2>&1; then
  gcloud pubsub subscriptions update regional-pricing-push \
      --push-endpoint="${REGIONAL_PRICING_URL}" \
      --push-auth-service-account="${SA}" \
      --ack-deadline=600 \
      --dead-letter-topic=regional-pricing-dead-letter \
      --max-delivery-attempts=10 \
      --min-retry-delay=10s \
      --max-retry-delay=600s \
      --expiration-period=never \
      --project="${PROJECT}"
else
  gcloud pubsub subscriptions create regional-pricing-push \
      --topic=PRICING_REQUESTS \
      --push-endpoint="${REGIONAL_PRICING_URL}" \
      --push-auth-service-account="${SA}" \
      --ack-deadline=600 \
      --dead-letter-topic=regional-pricing-dead-letter \
      --max-delivery-attempts=10 \
      --min-retry-delay=10s \
      --max-retry-delay=600s \
      --expiration-period=never \
      --project="${PROJECT}"
fi

# Pub/Sub's service agent acknowledges what it dead-letters
gcloud pubsub subscriptions add-iam-policy-binding regional-pricing-push \
    --member=serviceAccount:service-"${PROJECT_NUMBER}"@gcp-sa-pubsub.iam.gserviceaccount.com \
    --role=roles/pubsub.subscriber \
    --project="${PROJECT}"

# Cloud Scheduler calls the poller (timers, expired leases, lost messages)
if gcloud scheduler jobs describe sample_job-poller \
    --location="${REGION}" \
    --project="${PROJECT}" >/dev/null 2>&1; then
  gcloud scheduler jobs update http sample_job-poller \
      --location="${REGION}" \
      --schedule='* * * * *' \
      --uri="${POLLER_URL}" \
      --http-method=POST \
      --oidc-service-account-email="${SA}" \
      --oidc-token-audience="${POLLER_URL}" \
      --attempt-deadline=540s \
      --project="${PROJECT}"
else
  gcloud scheduler jobs create http sample_job-poller \
      --location="${REGION}" \
      --schedule='* * * * *' \
      --uri="${POLLER_URL}" \
      --http-method=POST \
      --oidc-service-account-email="${SA}" \
      --oidc-token-audience="${POLLER_URL}" \
      --attempt-deadline=540s \
      --time-zone=Etc/UTC \
      --project="${PROJECT}"
fi

# finished BigQuery jobs are logged to the external events topic
if gcloud logging sinks describe bq_complete_sink --project="${PROJECT}" >/dev/null 2>&1; then
  gcloud logging sinks update bq_complete_sink \
      pubsub.googleapis.com/projects/"${PROJECT}"/topics/SCHEDULE_EXTERNAL_EVENTS \
      --log-filter='resource.type="bigquery_resource" AND protoPayload.methodName="jobservice.jobcompleted"' \
      --project="${PROJECT}"
else
  gcloud logging sinks create bq_complete_sink \
      pubsub.googleapis.com/projects/"${PROJECT}"/topics/SCHEDULE_EXTERNAL_EVENTS \
      --log-filter='resource.type="bigquery_resource" AND protoPayload.methodName="jobservice.jobcompleted"' \
      --project="${PROJECT}"
fi

# the sink's writer identity
SINK_WRITER="$(gcloud logging sinks describe bq_complete_sink \
    --format='value(writerIdentity)' \
    --project="${PROJECT}")"

# the sink may publish to SCHEDULE_EXTERNAL_EVENTS
gcloud pubsub topics add-iam-policy-binding SCHEDULE_EXTERNAL_EVENTS \
    --member="${SINK_WRITER}" \
    --role=roles/pubsub.publisher \
    --project="${PROJECT}"

echo 'deployed job sample_job; start a run: POST its arguments as JSON to '"${START_URL}"' with an identity token (gcloud auth print-identity-token)'

echo 'pause, resume or cancel a run: POST {"action": ..., "run_id": ...} to '"${CONTROL_URL}"' with an identity token (gcloud auth print-identity-token)'
