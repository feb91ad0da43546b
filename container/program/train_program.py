"""The entry point sagemaker-training runs (SAGEMAKER_PROGRAM=train_program.py).

The image copies this file into /opt/ml/code; the training code itself is the
installed ``imgclf`` package.
"""

import sys

from imgclf.train import main

sys.exit(main())
