"""`muppets serve`: a trained model behind HTTP, with dynamic batching and a page to try it.

    run.py       ServeConfig + serve(): load the model once, build the app, run uvicorn
    loading.py   a model directory -> the routes it allows, and what /info says
    models.py    the task routes (classify, tag, qa) of fine-tuned and --downstream models
    encoders.py  the encoder routes (embed, fill-mask) of any family
    schemas.py   the request bodies (pydantic), strict: a wrong type or an unknown key names it
    batching.py  the bounded queue and the worker that groups requests by a token budget
    app.py       the Starlette app: auth, body limits, JSON errors, /health /info /metrics, the page
    metrics.py   Prometheus text: requests, latencies, batch sizes, queue depth
    static/      the page (no build step, no CDN)

Predictions are those of `muppets predict`: the routes featurize with the task setup's own
featurizers and decode with tasks/prediction.py (decode_tags, example_span).
"""
