# Copyright (c) MONAI Consortium
# Licensed under the Apache License, Version 2.0 (the "License");
# you may not use this file except in compliance with the License.
# You may obtain a copy of the License at
#     http://www.apache.org/licenses/LICENSE-2.0
# Unless required by applicable law or agreed to in writing, software
# distributed under the License is distributed on an "AS IS" BASIS,
# WITHOUT WARRANTIES OR CONDITIONS OF ANY KIND, either express or implied.
# See the License for the specific language governing permissions and
# limitations under the License.

"""Model Zoo unit test of the dad_pruning_segmentation bundle (ci/unit_tests/test_<bundle>.py): stage-1
training with DAD tracking, evaluation of its checkpoint, and inference with configs/inference.yaml
alone, each through ConfigWorkflow with check_properties, on a tiny embedded synthetic data set that
the bundle generates in a temporary folder. Run from the model-zoo root:
python ci/unit_tests/runner.py --b dad_pruning_segmentation"""

import os
import shutil
import sys
import tempfile
import unittest

from monai.bundle import ConfigWorkflow
from parameterized import parameterized
from utils import check_workflow

BUNDLE_ROOT = "models/dad_pruning_segmentation"
SYNTHETIC = {"num_train": 4, "num_val": 1, "num_test": 2, "shape": [16, 16, 16]}
TINY = {"bundle_root": BUNDLE_ROOT, "patch_size": [16, 16, 16], "num_workers": 0}

TEST_CASE_1 = [{**TINY, "epochs": 2, "delta_t": 1, "val_interval": 1, "cache_rate": 0.0}]  # train, evaluate

TEST_CASE_2 = [{**TINY, "handlers#0#_disabled_": True}]  # inference; do not load weights


def test_order(test_name1, test_name2):
    def get_order(name):
        if "train" in name:
            return 1
        if "eval" in name:
            return 2
        if "infer" in name:
            return 3
        return 4

    return get_order(test_name1) - get_order(test_name2)


class TestDADPruningSegmentation(unittest.TestCase):
    def setUp(self):
        self.work_dir = tempfile.mkdtemp()
        self.dataset_dir = os.path.join(self.work_dir, "data")
        if BUNDLE_ROOT not in sys.path:
            sys.path = [BUNDLE_ROOT] + sys.path  # the configs import the bundle's own `scripts` package
        # a tiny embedded data set (the bundle generates one by itself only into its own data/synthetic)
        from scripts.data.synthetic import generate_dataset

        generate_dataset(self.dataset_dir, **SYNTHETIC)

    def tearDown(self):
        shutil.rmtree(self.work_dir)

    def _files(self, bundle_root):
        return {
            "logging_file": os.path.join(bundle_root, "configs/logging.conf"),
            "meta_file": os.path.join(bundle_root, "configs/metadata.json"),
        }

    @parameterized.expand([TEST_CASE_1])
    def test_train_eval_config(self, override):
        override["dataset_dir"] = self.dataset_dir
        override["output_dir"] = os.path.join(self.work_dir, "stage1")
        override["ckpt_dir"] = os.path.join(self.work_dir, "models")
        bundle_root = override["bundle_root"]
        train_file = os.path.join(bundle_root, "configs/train.yaml")
        eval_file = os.path.join(bundle_root, "configs/evaluate.yaml")

        trainer = ConfigWorkflow(workflow_type="train", config_file=train_file, **self._files(bundle_root), **override)
        check_workflow(trainer, check_properties=True)
        self.assertTrue(os.path.isfile(os.path.join(self.work_dir, "stage1", "dynamics.csv")))

        validator = ConfigWorkflow(
            # override train.yaml, thus set the workflow to "train" rather than "eval"
            workflow_type="train",
            config_file=[train_file, eval_file],
            **self._files(bundle_root),
            **override,
        )
        check_workflow(validator, check_properties=True)
        self.assertTrue(os.path.isfile(os.path.join(self.work_dir, "stage1", "eval", "case_dice.csv")))

    @parameterized.expand([TEST_CASE_2])
    def test_infer_config(self, override):
        override["dataset_dir"] = self.dataset_dir
        override["output_dir"] = os.path.join(self.work_dir, "pred")
        bundle_root = override["bundle_root"]

        inferrer = ConfigWorkflow(
            workflow_type="infer",
            config_file=os.path.join(bundle_root, "configs/inference.yaml"),
            **self._files(bundle_root),
            **override,
        )
        check_workflow(inferrer, check_properties=True)
        self.assertEqual(len([f for f in os.listdir(override["output_dir"]) if f.endswith("_seg.nii.gz")]), 2)


if __name__ == "__main__":
    loader = unittest.TestLoader()
    loader.sortTestMethodsUsing = test_order
    unittest.main(testLoader=loader)
