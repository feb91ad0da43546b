"""Launchers for the imgclf image on SageMaker, on either SDK (2.x or 3.x, whichever is installed)."""
