"""Build the foreign-exporter fixture zoo: small ONNX image classifiers exported by frameworks other
than PyTorch, each with golden input gradients computed in float64 by the framework that built it.

Every fixture NAME in the output folder is ``NAME.onnx`` (exactly as the exporter wrote it) and
``NAME.golden.npz`` (inputs, classes, output, gradients, reference_outputs, flips); ``manifest.json``
describes them all. The onnx-backend part writes goldens only: its models ship inside the onnx package.

Where float32 sits on another linear piece of a ReLU network than float64 (``flips`` > 0: a unit on the other
side of its kink), no float32 gradient can match the float64 one. For the onnx-backend models with flips
(PIECE_MODELS) the goldens also hold ``piece_gradients``: the float64 gradient of the same output with every
kink held in the state onnxruntime float32 selects at that input (Relu masks, MaxPool Indices), read from
onnxruntime on the model as ``harness.gradients.prepare.prepare`` leaves it and substituted into the float64
torch interpretation (``onnx_float64.PieceTorchGraph``); the manifest's ``piece`` record holds the method, a
finite-difference cross-check, ``||piece_gradients - gradients|| / ||gradients||`` and whether the run with the
states exposed computes what the plain run does. The float32 states depend on onnxruntime's CPU kernels, and
so on the onnxruntime version and the CPU's vector extensions (recorded there). ``onnx-backend --pieces-only``
adds them to goldens already written, recomputing nothing else.

One module per part, imported only when that part is built, and the pip packages each needs (optional extras
of the project, never needed by the tests):

    keras_models    keras         tensorflow-cpu (2.21), keras (3), tf2onnx
    sklearn_models  sklearn       scikit-learn, skl2onnx
    jax_models      jax           jax, jax2onnx (which brings flax; its pooling functions are used)
    paddle_models   paddle        paddlepaddle, paddle2onnx, packaging (paddle2onnx needs it without declaring it)
    handbuilt       handbuilt     nothing more (torch, if installed, adds an autograd cross-check)
    onnx_backend    onnx-backend  torch (the float64 interpretation of the graphs, see onnx_float64.py; also
                                  for the piece gradients of ``pieces``)

The parts share ``images`` (candidate inputs), ``sessions`` (onnxruntime float32 values), ``kinks`` (float32
against float64 flips), ``fixtures`` (one fixture's inputs, golden checks, files and manifest entry), ``notes``
(the exporters' graph patterns) and ``pieces`` (the linear pieces); ``__main__`` is the command line. Every part
also needs numpy, onnx, onnxruntime, scikit-learn and pillow (for the sample photos and the digits) and this
checkout's ``harness`` package (``harness.gradients``, which needs nothing more: the ops with kinks are those
``harness.gradients.freeze`` holds, and the pieces read the model ``prepare()`` leaves). Run it from the
repository root, which puts both ``export_scripts`` and ``harness`` on the path.

The project's optional extras ``zoo-keras``, ``zoo-jax`` and ``zoo-paddle`` install these (e.g.
``pip install -e ".[zoo-jax]"``). The frameworks do not share one environment well, so ``all`` runs each part in
a subprocess and takes an interpreter per part (default: the one running this script). Regenerate everything with

    python -m export_scripts.foreign_zoo all --out tests/fixtures/foreign

(given one environment with every package), or part by part with per-framework environments, e.g.

    python -m export_scripts.foreign_zoo all --out tests/fixtures/foreign \\
        --python keras=../venvs/tf/bin/python --python sklearn=../venvs/tf/bin/python \\
        --python jax=../venvs/jax/bin/python --python paddle=../venvs/paddle/bin/python \\
        --python handbuilt=.venv/bin/python --python onnx-backend=.venv/bin/python

or one part alone: ``python -m export_scripts.foreign_zoo keras --out tests/fixtures/foreign``, or the piece
gradients alone (into the onnx-backend goldens already there):

    .venv/bin/python -m export_scripts.foreign_zoo onnx-backend --pieces-only --out tests/fixtures/foreign

Each part replaces its own entries in manifest.json and leaves the others. Weights, inputs and goldens are
deterministic from ``--seed`` (default 1860867); the exporters are not quite: tf2onnx numbers its
folded constants and nodes differently from run to run, and skl2onnx gives the graph a random name and
lists its opset imports in varying order, so regenerated .onnx files can differ in names only.
"""
