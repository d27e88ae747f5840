"""digitrec: a digit-recognition lab. The public API, re-exported; see docs/api.md."""
from digitrec.datasets import (DATASETS, DatasetError, available, dataset_info, load_dataset,
                               to_csv, to_dataframe)

__all__ = ["DATASETS", "DatasetError", "available", "dataset_info", "load_dataset", "to_csv",
           "to_dataframe"]
__version__ = "0.1.0"
