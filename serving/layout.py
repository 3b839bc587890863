"""Where a registered version's files are, as the signing pusher lays them out in the version's
run artifacts (read by serving/server.py in the pipeline's environment and by serving/runtime.py
in MLServer's; imports nothing):

    <run artifacts>/manifest.sig           the signature over every file under signed/
    <run artifacts>/signed/model/          the MLflow pyfunc folder (never loaded by the server)
    <run artifacts>/signed/model/artifacts/model_dir/   the export, with model_meta.json
    <run artifacts>/signed/evaluation/..., signed/baseline/..., signed/identity.json
"""

import os

SIGNED_FOLDER = "signed"
EXPORT_IN_SIGNED = os.path.join("model", "artifacts", "model_dir")
