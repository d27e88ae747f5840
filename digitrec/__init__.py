"""digitrec: a digit-recognition lab. The public API, re-exported; see docs/api.md.

Names are imported lazily (PEP 562) so `import digitrec` stays cheap: TensorFlow and SciPy load
only when a name that needs them is first used.
"""
from importlib import import_module

_EXPORTS = {
    "digitrec.datasets": ["DATASETS", "DatasetError", "available", "dataset_info", "load_dataset",
                          "to_csv", "to_dataframe"],
    "digitrec.models": ["FAMILIES", "build_model", "layer_table"],
    "digitrec.training": ["TrainConfig", "TrainResult", "TrainingCancelled", "describe_device", "train"],
    "digitrec.runs": ["RunStore", "Run", "RunInfo", "RunError"],
    "digitrec.jobs": ["Job"],
    "digitrec.transfer": ["TransferError", "export_run", "import_run"],
    "digitrec.preprocess": ["Preprocessed", "UploadError", "augment_view", "decode_upload", "scale",
                            "to_mnist"],
    "digitrec.inference": ["Predictor", "predict_digit"],
    "digitrec.evaluation": ["Comparison", "EvaluationError", "compare_runs", "confusion_matrix",
                            "errors", "most_confused_pairs", "per_class_metrics"],
    "digitrec.explain": ["grad_cam", "input_gradient_saliency", "occlusion_map", "overlay"],
    # `embedding` (the function) is not re-exported: it would shadow the submodule of that name.
    "digitrec.embedding": ["penultimate_features", "sample_indices"],
}
_WHERE = {name: module for module, names in _EXPORTS.items() for name in names}
__all__ = sorted(_WHERE)
__version__ = "0.1.0"


def __getattr__(name):
    if name in _WHERE:
        value = getattr(import_module(_WHERE[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'digitrec' has no attribute {name!r}")
