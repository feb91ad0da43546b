"""The entry point sagemaker-training runs (SAGEMAKER_PROGRAM); the code is the installed ``imgclf``."""

import sys

from imgclf.train import main

sys.exit(main())
