"""Launchers for the imgclf image on SageMaker, on either SDK (2.x or 3.x, whichever is installed).

One module per launcher (tune, train_debug, deploy, transform, invoke, analyze_debug, prepare_data,
local_train, sample_data); ``flags`` turns flags into a ``jobs.Target``, ``jobs`` holds the
backend-neutral requests, ``backends`` sends them through the installed SDK, ``dryrun`` captures
them instead.
"""
