"""Adversarial examples: the smallest epsilon really flips the model, and less does not."""
import numpy as np
import pytest

from digitrec.trust.adversarial import Attacker, compare_robustness


@pytest.fixture(scope="module")
def starter(tmp_path_factory, starter_run_id):
    from digitrec.runs import RunStore

    runs = RunStore(tmp_path_factory.mktemp("runs"))
    return runs.load(starter_run_id)


@pytest.fixture(scope="module")
def model(starter):
    return starter.model()


@pytest.fixture(scope="module")
def attacker(model):
    return Attacker(model)


@pytest.fixture(scope="module")
def digits():
    from digitrec.datasets import load_dataset

    x, y = load_dataset("mnist", "test")
    return x[:4].astype(np.float32) / 255, y[:4]


def _reading(model, image):
    """The model's own reading, through a plain Keras call (not the attacker's function)."""
    return int(np.argmax(np.asarray(model(image[None, ..., None], training=False))[0]))


@pytest.mark.parametrize("method", ["fgsm", "pgd"])
def test_smallest_epsilon_flips_and_one_less_does_not(attacker, model, digits, method):
    images, labels = digits
    for image, label in zip(images[:2], labels[:2], strict=True):
        adv = attacker.smallest_epsilon(image, method=method)
        assert adv.success and adv.original_digit == label
        assert 0 < adv.epsilon < 255
        assert _reading(model, adv.adversarial) != label          # it really flips the model
        assert np.abs(adv.perturbation).max() <= adv.epsilon / 255 + 1e-6
        assert adv.adversarial.min() >= 0 and adv.adversarial.max() <= 1
        assert np.allclose(adv.original + adv.perturbation, adv.adversarial, atol=1e-6)
        smaller = attacker.attack(image, adv.epsilon - 1.0, method=method)
        assert not smaller.success
        assert _reading(model, smaller.adversarial) == label       # and one unit less does not


def test_targeted_attack_reaches_the_target(attacker, model, digits):
    images, labels = digits
    target = 3 if labels[0] != 3 else 5
    adv = attacker.smallest_epsilon(images[0], method="pgd", target=target)
    assert adv.success and adv.target == target
    assert _reading(model, adv.adversarial) == target
    assert attacker.attack(images[0], adv.epsilon - 1.0, method="pgd",
                           target=target).adversarial_digit != target
    # already the target: nothing to do
    same = attacker.smallest_epsilon(images[0], target=int(labels[0]))
    assert same.epsilon == 0 and same.success


def test_bad_requests_say_what_to_do(attacker, digits):
    image = digits[0][0]
    with pytest.raises(ValueError, match="0..255"):
        attacker.attack(image, 300)
    with pytest.raises(ValueError, match="fgsm"):
        attacker.attack(image, 10, method="deepfool")
    with pytest.raises(ValueError, match="class"):
        attacker.attack(image, 10, target=10)
    with pytest.raises(ValueError, match="one image"):
        attacker.attack(digits[0], 10)


def test_robustness_of_a_batch_matches_one_at_a_time(attacker, digits):
    images, _ = digits
    together = attacker.robustness(images, method="fgsm")
    alone = [attacker.smallest_epsilon(x, method="fgsm").epsilon for x in images]
    assert together.shape == (4,)
    assert np.allclose(together, alone)


def test_compare_two_runs(starter, tmp_path, monkeypatch):
    from digitrec.runs import RunStore
    from digitrec.training import TrainConfig

    monkeypatch.setenv("DIGITREC_HOME", str(tmp_path / "runs"))
    weak = RunStore(tmp_path / "runs").train_now(
        TrainConfig.for_family("softmax", epochs=1, train_limit=2000))
    result = compare_robustness(starter, weak, n=12, method="fgsm")
    assert result["runs"] == [starter.run_id, weak.run_id]
    assert len(result["indices"]) == 12 and len(result["epsilon_a"]) == 12
    assert result["median_a"] == pytest.approx(np.median(result["epsilon_a"]))
    assert result["more_robust"] in (starter.run_id, weak.run_id, None)
    assert all(e > 0 for e in result["epsilon_a"] + result["epsilon_b"])
