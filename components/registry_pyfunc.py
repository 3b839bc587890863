"""The registered model as an MLflow pyfunc (models-from-code: nothing is pickled).

predict takes raw uint8 images [N, 28, 28] and returns probabilities [N, K] (K classes), whichever
framework trained the model; the trainers package travels with the model (code_paths).

Kept so that a version opens in MLflow's own tools (`mlflow.pyfunc.load_model`, the UI). The
project's server never loads it: loading it imports this file and the stored code/trainers/
from the registry, so serving/runtime.py loads the signed export with the checkout's loader.
"""

import mlflow
import numpy as np
from mlflow.pyfunc import PythonModel


class MnistDigitModel(PythonModel):
    def load_context(self, context):
        from trainers.loader import load_predictor

        self._predict, self.meta = load_predictor(context.artifacts["model_dir"])

    def predict(self, context, model_input, params=None):
        return self._predict(np.asarray(model_input))


mlflow.models.set_model(MnistDigitModel())
