"""GradientRuntime on the bundled digits CNN: batching, the on-disk cache, input validation, provider choice,
IOBinding runs, and the finite-difference gradient check."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest

import harness.gradients as gradient_pass
import harness.runtime.cache as cache_module
import harness.runtime.gradient as runtime_module
import harness.runtime.sessions as sessions_module
from harness.checks.gradcheck import check_gradient
from harness.core.errors import HarnessError
from harness.core.onnx_io import load_model
from harness.model.card import read_card
from harness.runtime.cache import cache_dir
from harness.runtime.gradient import GradientRuntime
from harness.runtime.sessions import CPU, CUDA, choose_providers, session_device, use_io_binding

DIGITS = Path(__file__).resolve().parents[1] / "exported_models" / "digits_cnn.onnx"
TAP = "/features/features.6/Relu_output_0"


@pytest.fixture(autouse=True)
def private_cache(tmp_path, monkeypatch):
    """Every test gets its own empty cache folder; nothing is written to the user's cache."""
    root = tmp_path / "harness-cache"
    monkeypatch.setenv("HARNESS_CACHE_DIR", str(root))
    monkeypatch.delenv("HARNESS_PROVIDER", raising=False)
    monkeypatch.delenv("HARNESS_IO_BINDING", raising=False)
    return root / "gradient-models"


@pytest.fixture(scope="module")
def runtimes():
    return {b: GradientRuntime(DIGITS, max_batch=b, use_cache=False) for b in (1, 3, 64)}


@pytest.fixture(scope="module")
def images():
    rng = np.random.default_rng(1860867)
    return rng.standard_normal((10, 1, 32, 32)).astype(np.float32), rng.standard_normal((10, 10)).astype(np.float32)


def count_runs(runtime: GradientRuntime, monkeypatch, streams: dict | None = None) -> list[int]:
    """Wrap every session's run (gradient and forward, each stream's) so that each call records its batch size,
    and in ``streams`` {stream: [sizes]} which stream ran it."""
    sizes: list[int] = []
    for primary in (runtime.session, runtime.forward_session):
        for stream, session in enumerate([primary, *runtime._twins.get(primary, [])]):
            def counting_run(names, feeds, *args, _real_run=session.run, _stream=stream, **kwargs):
                sizes.append(len(feeds[runtime.signature.input_name]))
                if streams is not None:
                    streams.setdefault(_stream, []).append(sizes[-1])
                return _real_run(names, feeds, *args, **kwargs)

            monkeypatch.setattr(session, "run", counting_run)
    return sizes


def close(a, b, rtol=1e-5):
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    np.testing.assert_allclose(a, b, rtol=rtol, atol=rtol * np.abs(b).max())


# -- batching -----------------------------------------------------------------------------------------------
def test_signature_of_the_digits_model(runtimes):
    signature = runtimes[3].signature
    assert signature.input_name == "input"
    assert signature.input_shape == (None, 1, 32, 32)
    assert signature.output_name == "logits"
    assert signature.num_classes == 10


def test_results_do_not_depend_on_max_batch(runtimes, images):
    x, seed = images
    classes = np.arange(10) % 10
    reference = runtimes[64]
    logits = reference.forward(x)
    g_logits, grads = reference.gradients(x, seed)
    c_logits, c_grads = reference.class_gradients(x, classes)
    assert logits.shape == (10, 10) and grads.shape == x.shape and c_grads.shape == x.shape
    close(g_logits, logits)
    close(c_logits, logits)
    onehot = np.eye(10, dtype=np.float32)[classes]
    close(c_grads, reference.gradients(x, onehot)[1])
    assert np.linalg.norm(grads - c_grads) > 1e-3 * np.linalg.norm(grads)  # the seed matters
    for batch in (1, 3):
        runtime = runtimes[batch]
        close(runtime.forward(x), logits)
        b_logits, b_grads = runtime.gradients(x, seed)
        close(b_logits, logits)
        close(b_grads, grads)
        close(runtime.class_gradients(x, classes)[1], c_grads)


@pytest.mark.parametrize("max_batch, expected", [(3, [3, 3, 3, 1]), (4, [4, 4, 2]), (10, [10]), (64, [10])])
def test_batching_really_chunks(max_batch, expected, images, monkeypatch):
    x, seed = images
    runtime = GradientRuntime(DIGITS, max_batch=max_batch, use_cache=False, streams=1)
    sizes = count_runs(runtime, monkeypatch)
    runtime.forward(x)
    assert sizes == expected
    sizes.clear()
    runtime.gradients(x, seed)
    assert sizes == expected
    sizes.clear()
    runtime.class_gradients(x, np.zeros(10, np.int64))
    assert sizes == expected


@pytest.mark.parametrize("name", ["digits_cnn", "shapes_resnet", "shapes_vit", "efficientnet_lite0"])
def test_two_streams_give_the_numbers_of_one_bit_for_bit(name, monkeypatch):
    """Two sessions side by side, each with one thread, against one session with two: pieces of
    max_batch // 2 rows dealt out in turn (at most max_batch rows in flight), the same bits per row."""
    path = DIGITS.parent / f"{name}.onnx"
    proto = load_model(path)
    card = read_card(proto, path)
    one, two = (GradientRuntime.from_card(proto, card, max_batch=5, threads=2, streams=s, provider="cpu")
                for s in (1, 2))
    assert (one.streams, two.streams) == (1, 2)
    pixels = np.random.default_rng(3).random((11, *card.input_size), dtype=np.float32)
    x = card.to_model(pixels)
    weights = np.random.default_rng(4).standard_normal((11, one.signature.num_classes)).astype(np.float32)
    by_stream: dict = {}
    sizes = count_runs(two, monkeypatch, by_stream)
    np.testing.assert_array_equal(two.forward(x), one.forward(x))
    assert by_stream == {0: [2, 2, 2], 1: [2, 2, 1]}       # pieces of 5 // 2 rows, in turn
    logits, grads = two.gradients(x, weights)
    want_logits, want_grads = one.gradients(x, weights)
    np.testing.assert_array_equal(logits, want_logits)
    np.testing.assert_array_equal(grads, want_grads)
    assert len(sizes) == 12


def test_two_streams_through_io_binding_and_on_a_static_batch_give_the_same_bits(tmp_path, images, monkeypatch):
    x, weights = images
    bound, plain, _ = bound_and_plain("digits_cnn", 1, max_batch=4, streams=2, threads=2)
    assert bound.binding and bound.streams == 2
    sizes = count_bound_runs(bound, monkeypatch)
    np.testing.assert_array_equal(bound.gradients(x, weights)[1], plain.gradients(x, weights)[1])
    assert sizes == [2] * 5
    path = static_batch_model(tmp_path / "static.onnx")          # batch fixed to 1: one row per stream
    one, two = (GradientRuntime(path, use_cache=False, threads=2, streams=s) for s in (1, 2))
    by_stream: dict = {}
    count_runs(two, monkeypatch, by_stream)
    np.testing.assert_array_equal(two.gradients(x[:5], weights[:5])[1], one.gradients(x[:5], weights[:5])[1])
    assert by_stream == {0: [1, 1, 1], 1: [1, 1]}


def test_streams_are_one_where_one_thread_or_one_row_is_given_and_can_be_set(monkeypatch):
    assert GradientRuntime(DIGITS, use_cache=False, threads=1).streams == 1
    assert GradientRuntime(DIGITS, use_cache=False, threads=2, max_batch=1).streams == 1
    assert GradientRuntime(DIGITS, use_cache=False, threads=2).streams == 2
    monkeypatch.setenv("HARNESS_CPUS", "1")
    assert GradientRuntime(DIGITS, use_cache=False).streams == 1
    monkeypatch.setenv("HARNESS_CPUS", "0")
    with pytest.raises(HarnessError, match="HARNESS_CPUS='0' is not understood"):
        GradientRuntime(DIGITS, use_cache=False)
    monkeypatch.delenv("HARNESS_CPUS")
    monkeypatch.setenv("HARNESS_STREAMS", "1")
    assert GradientRuntime(DIGITS, use_cache=False, threads=2).streams == 1
    monkeypatch.setenv("HARNESS_STREAMS", "two")
    with pytest.raises(HarnessError, match="HARNESS_STREAMS='two' is not understood"):
        GradientRuntime(DIGITS, use_cache=False)
    monkeypatch.delenv("HARNESS_STREAMS")
    with pytest.raises(HarnessError, match="at least 1"):
        GradientRuntime(DIGITS, use_cache=False, streams=0)


def test_a_model_with_large_weights_runs_on_one_stream_unless_asked(monkeypatch):
    """Each stream is a whole session (weights and prepacked weights): above STREAM_WEIGHT_LIMIT bytes of
    weights one session is the default on CPU; a requested count still holds."""
    large = sessions_module.STREAM_WEIGHT_LIMIT + 1
    assert sessions_module.stream_plan([CPU], 2, weight_bytes=large - 1) == (2, 1)
    assert sessions_module.stream_plan([CPU], 2, weight_bytes=large) == (1, 2)
    assert sessions_module.stream_plan([CPU], 2, requested=2, weight_bytes=large) == (2, 1)
    monkeypatch.setattr(sessions_module, "STREAM_WEIGHT_LIMIT", 1000)      # the digits CNN's weights exceed it
    assert GradientRuntime(DIGITS, use_cache=False, threads=2).streams == 1


def test_taps_come_back_batched(images):
    x, seed = images
    one = GradientRuntime(DIGITS, taps=[TAP], max_batch=64, use_cache=False)
    chunked = GradientRuntime(DIGITS, taps=[TAP], max_batch=3, use_cache=False)
    assert one.signature.taps == (TAP,)
    _, grads, taps = one.gradients_with_taps(x, seed)
    _, c_grads, c_taps = chunked.gradients_with_taps(x, seed)
    value, grad = taps[TAP]
    assert value.shape[0] == 10 and grad.shape == value.shape
    close(c_taps[TAP][0], value)
    close(c_taps[TAP][1], grad)
    close(c_grads, grads)


def test_exposed_tensors_come_from_the_forward_pass_batched(images):
    x, seed = images
    exposed = GradientRuntime(DIGITS, exposed=[TAP], max_batch=3, use_cache=False)
    tapped = GradientRuntime(DIGITS, taps=[TAP], max_batch=64, use_cache=False)
    close(exposed.forward_tensor(x, TAP), tapped.gradients_with_taps(x, seed)[2][TAP][0])
    close(exposed.forward(x), tapped.forward(x))
    with pytest.raises(HarnessError, match="not exposed"):
        tapped.forward_tensor(x, TAP)


# -- the on-disk cache --------------------------------------------------------------------------------------
def cached_files(folder: Path) -> list[Path]:
    return sorted(folder.iterdir()) if folder.exists() else []


def test_cache_dir_follows_the_environment(private_cache):
    assert cache_dir() == private_cache


def test_second_construction_loads_the_cached_file(private_cache, images, monkeypatch):
    x, seed = images
    first = GradientRuntime(DIGITS)
    files = cached_files(private_cache)
    assert len(files) == 1 and files[0].suffix == ".onnx"
    loaded = onnx.load(str(files[0]))
    assert "input_grad" in {o.name for o in loaded.graph.output}

    def no_rebuild(*args, **kwargs):
        raise AssertionError("the gradient model was rebuilt although it is cached")

    monkeypatch.setattr(cache_module, "add_input_gradient", no_rebuild)
    second = GradientRuntime(DIGITS)
    close(second.gradients(x, seed)[1], first.gradients(x, seed)[1])
    assert cached_files(private_cache) == files
    # a different request is a different entry, built afresh
    with pytest.raises(AssertionError, match="rebuilt"):
        GradientRuntime(DIGITS, taps=[TAP])
    with pytest.raises(AssertionError, match="rebuilt"):
        GradientRuntime(DIGITS, output="logits")


def test_editing_a_rule_of_the_gradient_pass_changes_the_cache_key(tmp_path, monkeypatch):
    """The key covers every source file of the gradient pass, wherever the modules live: the folder it reads is
    the imported package's, and an edit to one rule makes a new key (so a stale gradient model is never used)."""
    source = cache_module.GRADIENT_PASS_SOURCE
    assert source == Path(gradient_pass.__file__).resolve().parent
    assert {"builder.py", "conv.py", "freeze.py"} <= {p.name for p in source.rglob("*.py")}
    copy = tmp_path / "gradients"
    shutil.copytree(source, copy)
    monkeypatch.setattr(cache_module, "GRADIENT_PASS_SOURCE", copy)
    cache_module.pass_fingerprint.cache_clear()
    try:
        before = cache_module.pass_fingerprint()
        rule = copy / "rules" / "conv.py"
        rule.write_text(rule.read_text() + "\n# an edit\n")
        cache_module.pass_fingerprint.cache_clear()
        assert cache_module.pass_fingerprint() != before
    finally:
        cache_module.pass_fingerprint.cache_clear()


def test_different_taps_and_output_give_different_files(private_cache):
    GradientRuntime(DIGITS)
    GradientRuntime(DIGITS, taps=[TAP])
    GradientRuntime(DIGITS, output="logits")
    GradientRuntime(DIGITS, taps=[TAP])  # the same request again: no new file
    files = cached_files(private_cache)
    assert len(files) == 3, files
    assert not [f for f in files if f.name.startswith(".")], "temporary files left behind"


def test_use_cache_false_writes_nothing(private_cache):
    GradientRuntime(DIGITS, use_cache=False)
    assert cached_files(private_cache) == []


def _corrupt(kind: str, path: Path) -> None:
    data = path.read_bytes()
    if kind == "truncated":
        path.write_bytes(data[: len(data) // 2])
    elif kind == "garbage":
        path.write_bytes(np.random.default_rng(0).integers(0, 256, 4096, dtype=np.uint8).tobytes())
    elif kind == "empty":
        path.write_bytes(b"")
    elif kind == "not-a-gradient-model":
        path.write_bytes(DIGITS.read_bytes())


@pytest.mark.parametrize("kind", [
    "truncated",
    "garbage",
    "empty",
    "not-a-gradient-model",
])
def test_corrupted_cache_file_is_rebuilt(kind, private_cache, images):
    x, seed = images
    expected = GradientRuntime(DIGITS).gradients(x, seed)[1]
    (path,) = cached_files(private_cache)
    _corrupt(kind, path)
    rebuilt = GradientRuntime(DIGITS)
    close(rebuilt.gradients(x, seed)[1], expected)
    # the entry was rewritten with a usable model
    assert cached_files(private_cache) == [path]
    assert "input_grad" in {o.name for o in onnx.load(str(path)).graph.output}


# -- bad input ----------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def runtime(runtimes):
    return runtimes[3]


@pytest.mark.parametrize("shape", [(2, 1, 28, 28), (2, 3, 32, 32), (1, 32, 32), (2, 1, 32, 32, 1)])
def test_wrong_shape_names_the_expected_shape(runtime, shape):
    x = np.zeros(shape, np.float32)
    for call in (runtime.forward, lambda a: runtime.class_gradients(a, np.zeros(len(a), np.int64))):
        with pytest.raises(HarnessError) as caught:
            call(x)
        message = str(caught.value)
        assert "1, 32, 32]" in message and "'input'" in message, message
        assert str(list(shape)) in message, message


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_non_finite_input_is_rejected(runtime, bad):
    x = np.zeros((3, 1, 32, 32), np.float32)
    x[1, 0, 5, 7] = bad
    with pytest.raises(HarnessError, match="NaN or infinite"):
        runtime.forward(x)
    with pytest.raises(HarnessError, match="NaN or infinite"):
        runtime.gradients(x, np.ones((3, 10), np.float32))
    with pytest.raises(HarnessError, match="NaN or infinite"):
        runtime.class_gradients(x, np.zeros(3, np.int64))


@pytest.mark.parametrize("classes", [[0, 10], [-1, 3], [100]])
def test_class_index_out_of_range(runtime, classes):
    x = np.zeros((len(classes), 1, 32, 32), np.float32)
    with pytest.raises(HarnessError, match=r"\[0, 10\)"):
        runtime.class_gradients(x, np.array(classes))


def test_valid_class_indices_at_the_edges_work(runtime):
    x = np.zeros((2, 1, 32, 32), np.float32)
    _, grads = runtime.class_gradients(x, np.array([0, 9]))
    assert grads.shape == x.shape and np.isfinite(grads).all()


def test_seed_rows_must_match_images(runtime):
    with pytest.raises(HarnessError, match="rows"):
        runtime.gradients(np.zeros((4, 1, 32, 32), np.float32), np.ones((3, 10), np.float32))


@pytest.mark.parametrize("max_batch", [0, -1])
def test_max_batch_must_be_positive(max_batch):
    with pytest.raises(HarnessError, match="at least 1"):
        GradientRuntime(DIGITS, max_batch=max_batch, use_cache=False)


def static_batch_model(path: Path) -> Path:
    """The digits CNN with its batch dimension fixed to 1, as some exporters write it."""
    model = onnx.load(str(DIGITS))
    for value in (model.graph.input[0], model.graph.output[0]):
        value.type.tensor_type.shape.dim[0].dim_value = 1
    onnx.save(model, str(path))
    return path


def test_static_batch_model_is_run_or_rejected_cleanly(tmp_path, images):
    runtime = GradientRuntime(static_batch_model(tmp_path / "static.onnx"), use_cache=False)
    assert runtime.signature.input_shape == (1, 1, 32, 32)
    x, _ = images
    try:
        logits = runtime.forward(x[:4])
    except HarnessError:
        return
    assert logits.shape == (4, 10)




def test_empty_batch_is_handled(runtime):
    x = np.zeros((0, 1, 32, 32), np.float32)
    try:
        logits = runtime.forward(x)
        _, grads = runtime.class_gradients(x, np.zeros(0, np.int64))
    except HarnessError:
        return
    assert logits.shape == (0, 10) and grads.shape == x.shape


# -- providers ----------------------------------------------------------------------------------------------
def test_cpu_only_on_this_machine():
    if CUDA in ort.get_available_providers() and sessions_module.cuda_driver_present():
        pytest.skip("this machine has a usable CUDA provider")
    assert choose_providers() == [CPU]
    assert choose_providers("auto") == [CPU]
    assert choose_providers("cpu") == [CPU]
    with pytest.raises(HarnessError, match="CUDA"):
        choose_providers("cuda")


@pytest.fixture
def fake_cuda(monkeypatch):
    """Pretend onnxruntime-gpu and a CUDA driver are present (choose_providers only, no session)."""
    monkeypatch.setattr(ort, "get_available_providers", lambda: [CUDA, CPU])
    monkeypatch.setattr(sessions_module, "cuda_driver_present", lambda: True)


def test_cuda_is_preferred_when_present_and_cpu_is_honoured(fake_cuda, monkeypatch):
    assert choose_providers() == [CUDA, CPU]
    assert choose_providers("cuda") == [CUDA, CPU]
    monkeypatch.setenv("HARNESS_PROVIDER", "cpu")
    assert choose_providers() == [CPU]
    monkeypatch.setenv("HARNESS_PROVIDER", "CPU")
    assert choose_providers() == [CPU]
    assert choose_providers("cuda") == [CUDA, CPU]  # an explicit request beats the environment


def test_cuda_without_driver_is_an_error(monkeypatch):
    monkeypatch.setattr(sessions_module, "cuda_driver_present", lambda: False)
    with pytest.raises(HarnessError, match="CUDA"):
        choose_providers("cuda")
    monkeypatch.setenv("HARNESS_PROVIDER", "cuda")
    with pytest.raises(HarnessError, match="CUDA"):
        choose_providers()
    with pytest.raises(HarnessError, match="CUDA"):
        GradientRuntime(DIGITS, use_cache=False)


def test_cuda_driver_without_gpu_package_is_an_error(monkeypatch):
    monkeypatch.setattr(ort, "get_available_providers", lambda: [CPU])
    monkeypatch.setattr(sessions_module, "cuda_driver_present", lambda: True)
    with pytest.raises(HarnessError):
        choose_providers("cuda")
    assert choose_providers() == [CPU]


@pytest.mark.parametrize("name", ["tpu", "CUDAExecutionProvider", "gpu"])
def test_unknown_provider_is_an_error(name, monkeypatch):
    with pytest.raises(HarnessError, match="unknown provider"):
        choose_providers(name)
    monkeypatch.setenv("HARNESS_PROVIDER", name)
    with pytest.raises(HarnessError, match="unknown provider"):
        choose_providers()


def test_runtime_honours_harness_provider_cpu(monkeypatch):
    monkeypatch.setenv("HARNESS_PROVIDER", "cpu")
    assert GradientRuntime(DIGITS, use_cache=False).provider == CPU


# -- IOBinding ----------------------------------------------------------------------------------------------
def bound_and_plain(name: str, rows: int, **options):
    """Two runtimes of a bundled model fed as its card says, one through IOBinding and one plain, and images."""
    path = DIGITS.parent / f"{name}.onnx"
    proto = load_model(path)
    card = read_card(proto, path)
    options = {"provider": "cpu", "streams": 1, **options}    # the CPU provider even where CUDA is present
    bound, plain = (GradientRuntime.from_card(proto, card, binding=b, **options) for b in (True, False))
    pixels = np.random.default_rng(5).random((rows, *card.input_size), dtype=np.float32)
    return bound, plain, card.to_model(pixels)


def count_bound_runs(runtime: GradientRuntime, monkeypatch) -> list[int]:
    """Record the batch size of each IOBinding call; a plain ``session.run`` fails the test."""
    sizes: list[int] = []

    def counting_run_bound(session, names, feeds, device, _real=runtime_module.run_bound):
        sizes.append(len(feeds[runtime.signature.input_name]))
        return _real(session, names, feeds, device)

    def no_plain_run(*args, **kwargs):
        raise AssertionError("a plain run although IOBinding was asked for")

    monkeypatch.setattr(runtime_module, "run_bound", counting_run_bound)
    for session in (runtime.session, runtime.forward_session):
        monkeypatch.setattr(session, "run", no_plain_run)
    return sizes


@pytest.mark.parametrize("name, max_batch, rows, expected, taps", [
    ("digits_cnn", 3, 10, [3, 3, 3, 1], [TAP]),
    ("digits_cnn", 64, 10, [10], [TAP]),
    ("shapes_resnet", 4, 10, [4, 4, 2], []),
])
def test_io_binding_equals_plain_runs_bit_for_bit(name, max_batch, rows, expected, taps, monkeypatch):
    bound, plain, x = bound_and_plain(name, rows, max_batch=max_batch, taps=taps)
    assert bound.binding and not plain.binding and bound.provider == CPU
    weights = np.random.default_rng(6).standard_normal((rows, plain.signature.num_classes)).astype(np.float32)
    want_logits = plain.forward(x)
    want = plain.gradients_with_taps(x, weights)
    sizes = count_bound_runs(bound, monkeypatch)
    np.testing.assert_array_equal(bound.forward(x), want_logits)
    assert sizes == expected
    sizes.clear()
    logits, grads, tapped = bound.gradients_with_taps(x, weights)
    assert sizes == expected
    np.testing.assert_array_equal(logits, want[0])
    np.testing.assert_array_equal(grads, want[1])
    assert set(tapped) == set(taps)
    for tap in taps:
        np.testing.assert_array_equal(tapped[tap][0], want[2][tap][0])
        np.testing.assert_array_equal(tapped[tap][1], want[2][tap][1])
    np.testing.assert_array_equal(bound.gradients(x, weights)[1], want[1])


def test_io_binding_is_off_by_default_on_the_cpu_provider(monkeypatch):
    runtime = GradientRuntime(DIGITS, use_cache=False)
    assert runtime.provider == CPU and not runtime.binding
    assert session_device(runtime.session) == ("cpu", 0)
    assert not runtime.with_output("logits").binding
    assert GradientRuntime(DIGITS, use_cache=False, binding=True).with_output("logits").binding
    monkeypatch.setenv("HARNESS_IO_BINDING", "1")
    assert GradientRuntime(DIGITS, use_cache=False).binding


def test_io_binding_is_chosen_when_cuda_comes_first(monkeypatch):
    assert use_io_binding([CUDA, CPU])
    assert not use_io_binding([CPU])
    assert not use_io_binding([CPU, CUDA])
    assert not use_io_binding([CUDA, CPU], requested=False)
    assert use_io_binding([CPU], requested=True)
    monkeypatch.setenv("HARNESS_IO_BINDING", "0")
    assert not use_io_binding([CUDA, CPU])
    assert use_io_binding([CUDA, CPU], requested=True)  # an explicit request beats the environment
    monkeypatch.setenv("HARNESS_IO_BINDING", "1")
    assert use_io_binding([CPU])
    monkeypatch.setenv("HARNESS_IO_BINDING", "yes")
    with pytest.raises(HarnessError, match="HARNESS_IO_BINDING"):
        use_io_binding([CPU])


class FakeCudaSession:
    """What session_device reads of a session on the second GPU."""

    def get_providers(self):
        return [CUDA, CPU]

    def get_provider_options(self):
        return {CUDA: {"device_id": "1"}, CPU: {}}


def test_bound_values_live_on_the_sessions_device():
    assert session_device(FakeCudaSession()) == ("cuda", 1)


# -- the finite-difference check ----------------------------------------------------------------------------
class WrongGradients:
    """A runtime whose input gradients are deliberately wrong."""

    def __init__(self, inner: GradientRuntime, kind: str):
        self.inner, self.kind = inner, kind

    def __getattr__(self, name):
        return getattr(self.inner, name)

    def class_gradients(self, x, classes):
        logits, grads = self.inner.class_gradients(x, classes)
        if self.kind == "negated":
            return logits, -grads
        flat = grads.reshape(len(grads), -1)
        order = np.random.default_rng(0).permutation(flat.shape[1])
        return logits, flat[:, order].reshape(grads.shape)


@pytest.fixture(scope="module")
def check_inputs():
    return np.random.default_rng(7).standard_normal((4, 1, 32, 32)).astype(np.float32)


def test_gradient_check_passes_on_the_digits_model(runtimes, check_inputs):
    result = check_gradient(runtimes[64], check_inputs)
    assert result.passed, result
    assert result.relative_error < 1e-4 and result.cosine > 0.9999
    assert result.images == 4 and result.directions == 4
    assert result.as_dict()["passed"] is True


@pytest.mark.parametrize("kind", ["negated", "shuffled"])
def test_gradient_check_fails_on_a_wrong_gradient(runtimes, check_inputs, kind):
    result = check_gradient(WrongGradients(runtimes[64], kind), check_inputs)
    assert not result.passed
    assert result.relative_error > 0.5, result
    assert result.as_dict()["passed"] is False


# -- models fed other ways ----------------------------------------------------------------------------------
def _model(nodes, inputs, outputs, initializers=()) -> onnx.ModelProto:
    graph = onnx.helper.make_graph(nodes, "fed", inputs, outputs, list(initializers))
    return onnx.helper.make_model(graph, opset_imports=[onnx.helper.make_opsetid("", 17)], ir_version=8)


def _info(name, dims):
    return onnx.helper.make_tensor_value_info(name, onnx.TensorProto.FLOAT, dims)


def _array(name, value):
    return onnx.numpy_helper.from_array(np.asarray(value, np.float32), name)


def test_an_output_shaped_n_k_1_1_has_k_classes():
    """SqueezeNet- and DenseNet-style heads end in a 1x1 convolution and a global pool: [N, K, 1, 1]."""
    w = np.random.default_rng(0).standard_normal((5, 3, 1, 1))
    model = _model([onnx.helper.make_node("Conv", ["x", "w"], ["c"]),
                    onnx.helper.make_node("GlobalAveragePool", ["c"], ["scores"])],
                   [_info("x", ["N", 3, 4, 4])], [_info("scores", ["N", 5, 1, 1])], [_array("w", w)])
    runtime = GradientRuntime(model, use_cache=False)
    assert runtime.signature.num_classes == 5 and runtime.signature.class_shape == (5, 1, 1)
    x = np.random.default_rng(1).standard_normal((2, 3, 4, 4)).astype(np.float32)
    logits, grads = runtime.class_gradients(x, [4, 1])
    assert logits.shape == (2, 5)
    close(grads, np.broadcast_to(w[[4, 1], :, :, :] / 16, grads.shape))
    assert check_gradient(runtime, x).passed


def test_an_output_with_two_class_axes_is_refused():
    model = _model([onnx.helper.make_node("Identity", ["x"], ["y"])], [_info("x", ["N", 3, 4, 4])],
                   [_info("y", ["N", 3, 4, 4])])
    with pytest.raises(HarnessError, match=r"one axis of classes after the batch"):
        GradientRuntime(model, use_cache=False)


def test_flattened_image_inputs_are_fed_by_the_cards_image_size():
    """scikit-learn style: the model takes [N, 64] and the card says the image is (1, 8, 8)."""
    w = np.random.default_rng(0).standard_normal((64, 10)).astype(np.float32)
    model = _model([onnx.helper.make_node("MatMul", ["x", "w"], ["y"])], [_info("x", ["N", 64])],
                   [_info("y", ["N", 10])], [_array("w", w)])
    runtime = GradientRuntime(model, image_size=(1, 8, 8), use_cache=False)
    x = np.random.default_rng(1).random((3, 1, 8, 8), dtype=np.float32)
    np.testing.assert_allclose(runtime.forward(x), x.reshape(3, 64) @ w, rtol=1e-5)
    _, grads = runtime.class_gradients(x, [0, 3, 9])
    assert grads.shape == (3, 1, 8, 8)
    np.testing.assert_allclose(grads, w[:, [0, 3, 9]].T.reshape(3, 1, 8, 8))
    with pytest.raises(HarnessError, match=r"the image shape \[72\] does not fit input 'x', declared as \['N', 64\]"):
        GradientRuntime(model, image_size=(1, 8, 9), use_cache=False)


def test_flattened_rgb_follows_the_layout_order():
    """A flattened RGB image in NHWC order: the harness's [N, C, H, W] are transposed before flattening."""
    model = _model([onnx.helper.make_node("Identity", ["x"], ["y"])], [_info("x", ["N", 12])], [_info("y", ["N", 12])])
    x = np.arange(12, dtype=np.float32).reshape(1, 3, 2, 2)
    nhwc = GradientRuntime(model, image_size=(3, 2, 2), layout="NHWC", use_cache=False)
    np.testing.assert_array_equal(nhwc.forward(x)[0], x.transpose(0, 2, 3, 1).reshape(-1))
    _, grads = nhwc.class_gradients(x, [1])      # the model's feature 1 is (h=0, w=0, c=1)
    assert grads[0, 1, 0, 0] == 1 and grads.sum() == 1


def test_the_card_input_name_picks_the_image_among_float_inputs():
    model = _model([onnx.helper.make_node("Mul", ["image", "gain"], ["y"])],
                   [_info("image", ["N", 4]), _info("gain", ["N", 4])], [_info("y", ["N", 4])])
    with pytest.raises(HarnessError, match="several float inputs"):
        GradientRuntime(model, use_cache=False)
    with pytest.raises(HarnessError, match=r"inputs besides the image 'image' that have no value: \['gain'\]"):
        GradientRuntime(model, input="image", use_cache=False)


def test_inputs_with_initializers_are_constants():
    """IR 4+ lets an initializer be listed as an input too (a default a caller may override); the harness
    feeds the image only, so such inputs keep their initializer values."""
    model = _model([onnx.helper.make_node("Mul", ["image", "gain"], ["y"])],
                   [_info("image", ["N", 4]), _info("gain", [4])], [_info("y", ["N", 4])],
                   [_array("gain", [1.0, 2.0, 3.0, 4.0])])
    runtime = GradientRuntime(model, use_cache=False)
    _, grads = runtime.gradients(np.ones((1, 4), np.float32), np.ones((1, 4), np.float32))
    np.testing.assert_array_equal(grads, [[1, 2, 3, 4]])


def test_a_zero_pad_before_a_max_pool_keeps_its_zeros():
    """ONNX Runtime's Pad_Fusion merges a constant-0 Pad into the next MaxPool's padding, which pads with -inf
    (onnxruntime 1.31; tf2onnx writes ZeroPadding2D before MaxPooling2D that way): the runtime turns it off."""
    pads = onnx.numpy_helper.from_array(np.array([0, 0, 0, 1, 0, 0, 1, 0], np.int64), "pads")
    model = _model([onnx.helper.make_node("Pad", ["x", "pads"], ["padded"]),
                    onnx.helper.make_node("MaxPool", ["padded"], ["pooled"], kernel_shape=[2, 2], strides=[2, 2]),
                    onnx.helper.make_node("Flatten", ["pooled"], ["y"])],
                   [_info("x", ["N", 1, 3, 3])], [_info("y", ["N", 4])], [pads])
    runtime = GradientRuntime(model, use_cache=False)
    x = -np.ones((1, 1, 3, 3), np.float32)
    np.testing.assert_array_equal(runtime.forward(x), [[0, -1, 0, 0]])
    _, grads = runtime.class_gradients(x, [1])
    assert grads.sum() == 1
