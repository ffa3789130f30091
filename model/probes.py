"""Every layer call of a Keras graph model, and one forward pass that returns any of their
outputs: what the model audits probe.

Why not `layer.output`: Keras 3 keeps a layer's output per call (a node). A layer of a loaded
Sequential model has several nodes (loading builds the model more than once, and the first node
need not be connected to the model's inputs), and a layer inside a nested model has an output
only in the nested model's own graph, unconnected to the outer inputs. `ModelGraph` walks the
model's own graph instead -- nodes by depth, as Keras' Functional does -- and steps into nested
functional and Sequential models, so that the whole model becomes one flat program of operation
calls over the model's inputs. Every layer call gets a name: `conv_1`, or `encoder/conv_1` for
the layer `conv_1` inside the nested model `encoder` (Keras names cannot contain '/').
`ModelGraph.forward` runs the part of that program the requested outputs need, on real tensors:
no node is added to the model, so the same model can be probed any number of times and still
trains. Subclassed models have no graph (their `call` is Python code): `graph_of` returns None.

Relies on the Keras 3 internals its own Functional uses: `_nodes_by_depth`, `Node.arguments`
(`fill_in`), `Node.input_tensors`, `Node.outputs`, `Sequential._functional`.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import keras
import tensorflow as tf
from keras import tree

from stethoscope.model.callbacks import layer_kind
from stethoscope.schemas.errors import UsageError

Key = tuple[int, int]  # (instance of a graph, id of one of its KerasTensors)


@dataclass(frozen=True)
class LayerCall:
    """One call of a layer in the model's graph: its name, the symbolic (first) output
    [batch, ...], the indices of the model inputs that output depends on, and the indices (in
    `ModelGraph.calls`) of the calls upstream of it, itself included. `shared`: the layer is
    called more than once (its output is not one tensor); `container`: a nested model, whose
    own layers have calls of their own."""

    name: str
    layer: keras.layers.Layer
    output: Any  # keras.KerasTensor
    inputs: frozenset[int]
    upstream: frozenset[int]
    shared: bool
    container: bool
    key: Key

    @property
    def has_time(self) -> bool:
        """[batch, T', units] or more axes: the output keeps a time axis."""
        return len(self.output.shape) >= 3


@dataclass(frozen=True)
class _Step:
    """One operation call of the flat program, with the keys of its arguments and outputs."""

    operation: Any
    node: Any
    arguments: tuple[tuple[int, Key], ...]  # (id of a symbolic argument of the node, its key)
    outputs: tuple[Key, ...]


def graph_of(model: keras.Model) -> Any | None:
    """The graph (a Keras Functional) that computes `model`; None for a subclassed model or an
    unbuilt Sequential."""
    if isinstance(model, keras.Sequential):
        return getattr(model, "_functional", None)
    return model if hasattr(model, "_nodes_by_depth") else None


class ModelGraph:
    """The layer calls of a graph model, in the model's layer order (the layers of a nested
    model just before the nested model), and a forward pass returning their outputs."""

    def __init__(self, model: keras.Model) -> None:
        graph = graph_of(model)
        if graph is None:
            raise TypeError(f"model {model.name!r} ({type(model).__name__}) has no graph of "
                            "layers (a subclassed model, or a Sequential model never built)")
        self.model = model
        self.inputs: list[Any] = list(graph.inputs)
        self.input_keys: list[Key] = [(0, id(x)) for x in self.inputs]
        self._steps: list[_Step] = []
        self._producer: dict[Key, int] = {}  # output key -> index of its step
        self._alias: dict[Key, Key] = {}  # inputs and outputs of nested graphs -> outer keys
        self._inputs_of: dict[Key, frozenset[int]] = {
            key: frozenset({i}) for i, key in enumerate(self.input_keys)}
        self._upstream: dict[Key, frozenset[int]] = {key: frozenset() for key in self.input_keys}
        self._found: list[tuple[str, Any, Any, Key, bool]] = []  # name, layer, output, key, nested
        self._num_scopes = 0
        self._walk(graph, 0, "")
        self.calls = self._ordered_calls(model)

    def find(self, name: str) -> LayerCall | None:
        """The call named `name` (qualified, or the bare name of one layer), else None."""
        exact = [c for c in self.calls if c.name == name]
        bare = [c for c in self.calls if c.name.rsplit("/", 1)[-1] == name]
        return exact[0] if exact else bare[0] if len(bare) == 1 else None

    def forward(self, inputs: Sequence[Any], calls: Sequence[LayerCall]) -> list[Any]:
        """The outputs of `calls` for `inputs` (tensors in the order of the model's inputs), in
        inference mode; only the operations they depend on run."""
        values: dict[Key, Any] = dict(zip(self.input_keys, inputs, strict=True))
        for step in self._program([call.key for call in calls]):
            args, kwargs = step.node.arguments.fill_in(
                {tensor: values[key] for tensor, key in step.arguments})
            if "training" in getattr(step.operation, "_call_context_args", ()):
                kwargs = {**kwargs, "training": False}
            outputs = tree.flatten(step.operation(*args, **kwargs))
            values.update(zip(step.outputs, outputs, strict=True))
        return [values[call.key] for call in calls]

    def _program(self, wanted: list[Key]) -> list[_Step]:
        """The steps that the wanted keys depend on, in program (topological) order."""
        needed: set[int] = set()
        stack = [key for key in wanted if key in self._producer]
        while stack:
            index = self._producer[stack.pop()]
            if index not in needed:
                needed.add(index)
                stack += [k for _, k in self._steps[index].arguments if k in self._producer]
        return [self._steps[i] for i in sorted(needed)]

    def _key(self, key: Key) -> Key:
        while key in self._alias:
            key = self._alias[key]
        return key

    def _walk(self, graph: Any, scope: int, prefix: str) -> None:
        """Append the operations of `graph` (its instance `scope`) to the program, stepping
        into nested models, and note every layer call."""
        for depth in sorted(graph._nodes_by_depth, reverse=True):
            for node in graph._nodes_by_depth[depth]:
                if node.operation is None or node.is_input:
                    continue
                arguments = [(id(x), self._key((scope, id(x)))) for x in node.input_tensors]
                if any(key not in self._inputs_of for _, key in arguments):
                    continue  # not computable from the inputs; Keras skips it too
                operation = node.operation
                inner = graph_of(operation) if isinstance(operation, keras.Model) else None
                if inner is not None:
                    self._walk_nested(operation, inner, node, scope, prefix)
                    continue
                keys = tuple((scope, id(x)) for x in node.outputs)
                inputs_of = frozenset().union(*(self._inputs_of[k] for _, k in arguments))
                upstream = frozenset().union(*(self._upstream[k] for _, k in arguments))
                if isinstance(operation, keras.layers.Layer):
                    upstream |= {len(self._found)}
                    self._found.append((prefix + operation.name, operation, node.outputs[0],
                                        keys[0], False))
                for key in keys:
                    self._inputs_of[key], self._upstream[key] = inputs_of, upstream
                    self._producer[key] = len(self._steps)
                self._steps.append(_Step(operation, node, tuple(arguments), keys))

    def _walk_nested(self, model: keras.Model, inner: Any, node: Any, scope: int,
                     prefix: str) -> None:
        """A nested model's call: its graph's inputs become the outer arguments, its outputs
        the inner graph's outputs; its own layers are walked under `<prefix><name>/`."""
        self._num_scopes += 1
        inner_scope = self._num_scopes
        given = node.arguments.args[0] if node.arguments.args else node.arguments.kwargs["inputs"]
        if isinstance(given, dict):
            given = [given[x.name] for x in inner.inputs]
        for x, outer in zip(inner.inputs, tree.flatten(given), strict=True):
            self._alias[(inner_scope, id(x))] = self._key((scope, id(outer)))
        self._walk(inner, inner_scope, f"{prefix}{model.name}/")
        for x, y in zip(node.outputs, inner.outputs, strict=True):
            self._alias[(scope, id(x))] = self._key((inner_scope, id(y)))
        self._found.append((prefix + model.name, model, node.outputs[0],
                            (scope, id(node.outputs[0])), True))

    def _ordered_calls(self, model: keras.Model) -> list[LayerCall]:
        """The calls in the model's layer order (the order `model.layers` lists them)."""
        times_called: dict[int, int] = {}
        for _, layer, *_ in self._found:
            times_called[id(layer)] = times_called.get(id(layer), 0) + 1
        rank = {id(layer): i for i, layer in enumerate(_layers_in_order(model))}
        order = sorted(range(len(self._found)),
                       key=lambda i: (rank.get(id(self._found[i][1]), len(rank)), i))
        position = {found: i for i, found in enumerate(order)}
        calls = []
        for found in order:
            name, layer, output, key, nested = self._found[found]
            key = self._key(key)
            calls.append(LayerCall(
                name=name, layer=layer, output=output, inputs=self._inputs_of[key],
                upstream=frozenset(position[i] for i in self._upstream[key]),
                shared=times_called[id(layer)] > 1, container=nested, key=key))
        return calls


def inspected_calls(graph: ModelGraph, names: Sequence[str] | None = None) -> list[LayerCall]:
    """The calls whose activations the audit inspects: convolutional, recurrent, dense and
    activation layers (`layer_kind`) called once, nested ones included, in the model's order;
    `names` (qualified, or bare when unique) restricts them. A name that is not such a call
    is a UsageError listing the ones that are."""
    calls = [c for c in graph.calls
             if not c.container and not c.shared and layer_kind(c.layer) is not None]
    if names is None:
        return calls
    found = {name: graph.find(name) for name in names}
    chosen = {call.name if call is not None else name for name, call in found.items()}
    missing = sorted(chosen - {c.name for c in calls})
    if missing:
        raise UsageError(
            f"activations.layers {missing} are not inspectable layers of model "
            f"{graph.model.name!r}; inspectable: {[c.name for c in calls]}. Name some of these "
            "(or leave activations.layers unset to inspect them all).")
    return [c for c in calls if c.name in chosen]


def compile_forward(graph: ModelGraph, calls: Sequence[LayerCall]
                    ) -> Callable[[list[Any]], list[tf.Tensor]]:
    """`graph.forward` for `calls` as a tf.function traced once for any batch size: model
    inputs (a list of arrays) -> the calls' outputs. Eager recurrent layers step through time in
    Python, so compiling matters."""

    @tf.function(input_signature=[input_signature(graph)])
    def forward(inputs: list[tf.Tensor]) -> list[tf.Tensor]:
        return graph.forward(list(inputs), calls)

    return forward


def input_signature(graph: ModelGraph) -> list[tf.TensorSpec]:
    """The model's inputs with any batch size."""
    return [tf.TensorSpec((None, *x.shape[1:]), x.dtype) for x in graph.inputs]


def _layers_in_order(model: keras.Model) -> list[keras.layers.Layer]:
    """The model's layers in its own order, the layers of a nested model just before it."""
    out: list[keras.layers.Layer] = []
    for layer in model.layers:
        if isinstance(layer, keras.Model) and graph_of(layer) is not None:
            out += _layers_in_order(layer)
        out.append(layer)
    return out
