"""The serverless application's library: what the Lambda handlers call.

- :mod:`~fsd_inference.cloud.layout`: where an execution's data lives in the bucket,
- :mod:`~fsd_inference.cloud.run`: the small state the state machine carries,
- :mod:`~fsd_inference.cloud.history`: history-event and transition arithmetic,
- :mod:`~fsd_inference.cloud.plan_step`, ``worker_step``, ``gather_step``,
  ``cleanup_step``: one module per state of statemachine/inference.asl.json; they
  keep their objects in a :mod:`fsd_inference.storage` (S3 on AWS, a folder locally).
"""
