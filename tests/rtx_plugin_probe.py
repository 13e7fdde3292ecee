"""Can TensorRT-RTX take the AST plugins as class-based Python ``IPluginV3`` plugins? Run as a script
(``python tests/rtx_plugin_probe.py MODEL.onnx``) in a process of its own: TensorRT-RTX 1.7.1 aborts it.

It registers ``ast::PartialConv`` and ``ast::AdaptiveSparseAttention[Shifted]`` creators (TensorRT's
class-based Python plugin API: ``IPluginV3`` + ``IPluginV3OneCore/Build/Runtime``,
``IPluginCreatorV3One``, ``get_plugin_registry().register_creator``) whose shape, type and format
functions are the plugins' own rules (``ast_deploy.engines.plugin_rules``), parses the model and
builds it for SM89, printing one ``PROBE ...`` line per step and per plugin call, so the caller sees
how far the real library went.
"""

import sys

import numpy as np


def say(*parts):
    print("PROBE", *parts, flush=True)


def plugin_classes(trt, rules):
    """An IPluginV3 class whose shape, type and format functions report each call."""

    class Plugin(trt.IPluginV3, trt.IPluginV3OneCore, trt.IPluginV3OneBuild, trt.IPluginV3OneRuntime):
        def __init__(self, name, phase=None):
            trt.IPluginV3.__init__(self)
            trt.IPluginV3OneCore.__init__(self)
            trt.IPluginV3OneBuild.__init__(self)
            trt.IPluginV3OneRuntime.__init__(self)
            self.num_outputs, self.plugin_namespace = 1, rules.NAMESPACE
            self.plugin_name, self.plugin_version = name, "1"
            self.phase = phase

        def get_capability_interface(self, kind):
            return self

        def get_output_data_types(self, input_types):
            say("types", self.plugin_name)
            return [input_types[0]]

        def get_output_shapes(self, inputs, shape_inputs, builder):
            say("shapes", self.plugin_name)
            if self.plugin_name == rules.PARTIAL_CONV:
                rules.check_partial_conv_shapes([None] * len(inputs[0]), [None] * len(inputs[1]))
            return [trt.DimsExprs(inputs[0])]

        def supports_format_combination(self, pos, in_out, num_inputs):
            say("formats", self.plugin_name, pos)
            return in_out[pos].desc.format == trt.TensorFormat.LINEAR

        def get_fields_to_serialize(self):
            return trt.PluginFieldCollection([])

        def configure_plugin(self, inputs, outputs):
            say("configure", self.plugin_name)

        def on_shape_change(self, inputs, outputs):
            pass

        def enqueue(self, *args):
            raise RuntimeError("the probe only builds")

        def attach_to_context(self, context):
            return self.clone()

        def get_valid_tactics(self):
            return []

        def set_tactic(self, tactic):
            pass

        def clone(self):
            copy = Plugin(self.plugin_name, self.phase)
            copy.__dict__.update(self.__dict__)
            return copy

    return Plugin


def creator_class(trt, rules, Plugin):
    """The IPluginCreatorV3One that makes ``Plugin`` objects and reports each creation."""

    class Creator(trt.IPluginCreatorV3One):
        def __init__(self, name, fields):
            trt.IPluginCreatorV3One.__init__(self)
            self.name, self.plugin_namespace, self.plugin_version = name, rules.NAMESPACE, "1"
            self.field_names = trt.PluginFieldCollection([trt.PluginField(f, np.array([]), t) for f, t in fields])

        def create_plugin(self, name, fields, phase):
            say("create", self.name, name)
            return Plugin(self.name, phase)

    return Creator


def main(onnx_path: str) -> None:
    import tensorrt_rtx_bindings as trt

    from ast_deploy.engines import plugin_rules as rules

    Creator = creator_class(trt, rules, plugin_classes(trt, rules))
    attention = [("num_heads", trt.PluginFieldType.INT32), ("scale", trt.PluginFieldType.FLOAT32)]
    creators = [Creator(rules.PARTIAL_CONV, []), Creator(rules.ASSA, attention), Creator(rules.ASSA_SHIFTED, attention)]
    registry = trt.get_plugin_registry()
    for creator in creators:
        say("registered", creator.name, registry.register_creator(creator, rules.NAMESPACE))
    say("network_has_add_plugin_v3", hasattr(trt.INetworkDefinition, "add_plugin_v3"))

    class Logger(trt.ILogger):
        def __init__(self):
            trt.ILogger.__init__(self)

        def log(self, severity, msg):
            if "plugin" in msg.lower():
                say("log", msg.replace("\n", " ")[:300])

    logger = Logger()
    builder = trt.Builder(logger)
    network = builder.create_network(0)
    parser = trt.OnnxParser(network, logger)
    say("parsed", parser.parse_from_file(onnx_path), [str(parser.get_error(i)) for i in range(parser.num_errors)])
    config = builder.create_builder_config()
    config.num_compute_capabilities = 1
    config.set_compute_capability(trt.ComputeCapability.SM89, 0)
    say("built", builder.build_serialized_network(network, config) is not None)


if __name__ == "__main__":
    main(sys.argv[1])
