"""`python deploy/warm_worker.py run dashboard/app.py [streamlit options]`: Streamlit's own command
line, in a process that has already imported TensorFlow and Keras.

Why: `streamlit run` imports nothing of the app until the first browser connects, so the first
student of each worker process waited for TensorFlow's import as well as the model's load: 12-13 s
on the project's 2-core machine (bench/bench_load.py's `max`). deploy/serve.py starts its workers
through this file, so the import happens while the teacher is still handing out the address.
Nothing else differs: the arguments go to Streamlit unchanged.
"""
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from digitrec import quiet  # noqa: E402

quiet.install()  # TensorFlow's start-up lines stay out of the worker's log, as in the app

import keras  # noqa: E402,F401  (TensorFlow comes with it: the slow part of a first page)
from streamlit.web.cli import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main(prog_name="streamlit"))
