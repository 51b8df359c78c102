#if canImport(Glibc)
import Glibc
#endif
import CONNX
import ONNXGraph

/// Where the writer puts one tensor's data.
enum TensorPlacement {
    /// Write the tensor's fields exactly as they are in the IR.
    case asIs
    /// Write the data as `raw_data` (the tensor was external, or had typed fields).
    case inline(ByteBuffer)
    /// Write the data to the output's external file at `offset`.
    case external(location: String, offset: Int, length: Int)
}

/// Builds a protobuf-c message tree from the IR, for packing.
///
/// The inverse of ``ProtoDecoder``: field for field, presence for presence,
/// unknown fields attached, so that an unchanged model packs to the same
/// message it was read from. `placement` decides per tensor whether its data
/// is written inline or to the external data file.
struct ProtoEncoder {
    let arena: CArena
    /// Called for every tensor; `isInitializer` is true for graph initializers.
    let placement: (Tensor, _ isInitializer: Bool) throws -> TensorPlacement
    /// Where to record the `checksum` values of relocated external tensors,
    /// which can only be filled in once the data file is written.
    var checksums: ChecksumSlots? = nil

    func pairs(_ list: [StringPair]) -> (Int, UnsafeMutablePointer<UnsafeMutablePointer<Onnx__StringStringEntryProto>?>?) {
        arena.messages(list) { pair in
            let e = arena.message(onnx__string_string_entry_proto__init)
            (e.pointee.has_key, e.pointee.key) = arena.string(pair.key)
            (e.pointee.has_value, e.pointee.value) = arena.string(pair.value)
            arena.attach(pair.unknownFields, to: &e.pointee.base)
            return e
        }
    }

    func opsets(_ list: [OperatorSetID]) -> (Int, UnsafeMutablePointer<UnsafeMutablePointer<Onnx__OperatorSetIdProto>?>?) {
        arena.messages(list) { id in
            let o = arena.message(onnx__operator_set_id_proto__init)
            (o.pointee.has_domain, o.pointee.domain) = arena.string(id.domain)
            if let v = id.version { o.pointee.has_version = 1; o.pointee.version = v }
            arena.attach(id.unknownFields, to: &o.pointee.base)
            return o
        }
    }

    // MARK: Model

    /// The model's tree, with the main graph's initializers held back to be
    /// encoded one at a time while packing (see ``EncodedModel``).
    func encode(_ model: Model) throws -> EncodedModel {
        var streamed: StreamedInitializers?
        let tree = try self.model(model, streaming: &streamed)
        return EncodedModel(tree: tree, initializers: streamed, arena: arena)
    }

    /// The whole model as one tree, initializers included: what ``encode(_:)``
    /// packs to, in one piece (the tests compare the two).
    func wholeTree(_ model: Model) throws -> UnsafeMutablePointer<Onnx__ModelProto> {
        var none: StreamedInitializers?
        return try self.model(model, streaming: &none, stream: false)
    }

    func model(_ model: Model, streaming streamed: inout StreamedInitializers?, stream: Bool = true)
        throws -> UnsafeMutablePointer<Onnx__ModelProto> {
        let m = arena.message(onnx__model_proto__init)
        if let v = model.irVersion { m.pointee.has_ir_version = 1; m.pointee.ir_version = v }
        (m.pointee.n_opset_import, m.pointee.opset_import) = opsets(model.opsetImports)
        (m.pointee.has_producer_name, m.pointee.producer_name) = arena.string(model.producerName)
        (m.pointee.has_producer_version, m.pointee.producer_version) = arena.string(model.producerVersion)
        (m.pointee.has_domain, m.pointee.domain) = arena.string(model.domain)
        if let v = model.modelVersion { m.pointee.has_model_version = 1; m.pointee.model_version = v }
        (m.pointee.has_doc_string, m.pointee.doc_string) = arena.string(model.docString)
        if let g = model.graph {
            m.pointee.graph = try graph(g, streaming: &streamed, stream: stream)
        }
        (m.pointee.n_metadata_props, m.pointee.metadata_props) = pairs(model.metadataProps)
        (m.pointee.n_training_info, m.pointee.training_info) = try arena.messages(model.trainingInfo) { info in
            let t = arena.message(onnx__training_info_proto__init)
            t.pointee.initialization = try info.initialization.map(graph)
            t.pointee.algorithm = try info.algorithm.map(graph)
            (t.pointee.n_initialization_binding, t.pointee.initialization_binding) = pairs(info.initializationBinding)
            (t.pointee.n_update_binding, t.pointee.update_binding) = pairs(info.updateBinding)
            arena.attach(info.unknownFields, to: &t.pointee.base)
            return t
        }
        (m.pointee.n_functions, m.pointee.functions) = try arena.messages(model.functions, function)
        (m.pointee.n_configuration, m.pointee.configuration) = arena.messages(model.configuration) { config in
            let c = arena.message(onnx__device_configuration_proto__init)
            (c.pointee.has_name, c.pointee.name) = arena.string(config.name)
            if let n = config.numDevices { c.pointee.has_num_devices = 1; c.pointee.num_devices = n }
            (c.pointee.n_device, c.pointee.device) = arena.strings(config.devices)
            arena.attach(config.unknownFields, to: &c.pointee.base)
            return c
        }
        arena.attach(model.unknownFields, to: &m.pointee.base)
        return m
    }

    func function(_ fn: Function) throws -> UnsafeMutablePointer<Onnx__FunctionProto> {
        let f = arena.message(onnx__function_proto__init)
        (f.pointee.has_name, f.pointee.name) = arena.string(fn.name)
        (f.pointee.n_input, f.pointee.input) = arena.strings(fn.inputs)
        (f.pointee.n_output, f.pointee.output) = arena.strings(fn.outputs)
        (f.pointee.n_attribute, f.pointee.attribute) = arena.strings(fn.attributeNames)
        (f.pointee.n_attribute_proto, f.pointee.attribute_proto) = try arena.messages(fn.attributeDefaults, attribute)
        (f.pointee.n_node, f.pointee.node) = try arena.messages(fn.nodes, node)
        (f.pointee.has_doc_string, f.pointee.doc_string) = arena.string(fn.docString)
        (f.pointee.n_opset_import, f.pointee.opset_import) = opsets(fn.opsetImports)
        (f.pointee.has_domain, f.pointee.domain) = arena.string(fn.domain)
        (f.pointee.has_overload, f.pointee.overload) = arena.string(fn.overload)
        (f.pointee.n_value_info, f.pointee.value_info) = arena.messages(fn.valueInfo, valueInfo)
        (f.pointee.n_metadata_props, f.pointee.metadata_props) = pairs(fn.metadataProps)
        arena.attach(fn.unknownFields, to: &f.pointee.base)
        return f
    }

    // MARK: Graph and nodes

    func graph(_ graph: Graph) throws -> UnsafeMutablePointer<Onnx__GraphProto> {
        var none: StreamedInitializers?
        return try self.graph(graph, streaming: &none, stream: false)
    }

    /// With `stream`, the initializers are not put in the tree: each is
    /// placed now (in the order a full tree would place it), measured in a
    /// scratch arena and described in `streamed`, and encoded again while
    /// packing. Tensors whose placement changes their fields (inline or
    /// external) are few and built here, in the tree's arena (their checksum
    /// slots must stay valid until the data file is hashed).
    func graph(_ graph: Graph, streaming streamed: inout StreamedInitializers?, stream: Bool = true)
        throws -> UnsafeMutablePointer<Onnx__GraphProto> {
        let g = arena.message(onnx__graph_proto__init)
        (g.pointee.n_node, g.pointee.node) = try arena.messages(graph.nodes, node)
        (g.pointee.has_name, g.pointee.name) = arena.string(graph.name)
        let initializers = graph.initializers
        if stream && !initializers.isEmpty {
            let held = StreamedInitializers(tensors: initializers, graph: g)
            let scratch = CArena(measuring: true)
            let asIs = ProtoEncoder(arena: scratch, placement: { _, _ in .asIs })
            for (i, t) in initializers.enumerated() {
                let place = try placement(t, true)
                let size: Int
                if case .asIs = place {
                    scratch.reset()
                    size = onnx__tensor_proto__get_packed_size(try asIs.tensor(t, placed: .asIs))
                } else {
                    let built = try tensor(t, placed: place)
                    held.prebuilt.append((i, built))
                    size = onnx__tensor_proto__get_packed_size(built)
                }
                held.fieldsSize += 1 + varintSize(UInt64(size)) + size
            }
            streamed = held
        } else {
            (g.pointee.n_initializer, g.pointee.initializer) = try arena.messages(initializers) {
                try tensor($0, isInitializer: true)
            }
        }
        (g.pointee.n_sparse_initializer, g.pointee.sparse_initializer) = try arena.messages(graph.sparseInitializers, sparseTensor)
        (g.pointee.has_doc_string, g.pointee.doc_string) = arena.string(graph.docString)
        (g.pointee.n_input, g.pointee.input) = arena.messages(graph.inputs, valueInfo)
        (g.pointee.n_output, g.pointee.output) = arena.messages(graph.outputs, valueInfo)
        (g.pointee.n_value_info, g.pointee.value_info) = arena.messages(graph.valueInfo, valueInfo)
        (g.pointee.n_quantization_annotation, g.pointee.quantization_annotation) =
            arena.messages(graph.quantizationAnnotations) { ann in
                let a = arena.message(onnx__tensor_annotation__init)
                (a.pointee.has_tensor_name, a.pointee.tensor_name) = arena.string(ann.tensorName)
                (a.pointee.n_quant_parameter_tensor_names, a.pointee.quant_parameter_tensor_names) =
                    pairs(ann.quantParameterTensorNames)
                arena.attach(ann.unknownFields, to: &a.pointee.base)
                return a
            }
        (g.pointee.n_metadata_props, g.pointee.metadata_props) = pairs(graph.metadataProps)
        arena.attach(graph.unknownFields, to: &g.pointee.base)
        return g
    }

    func node(_ node: Node) throws -> UnsafeMutablePointer<Onnx__NodeProto> {
        let n = arena.message(onnx__node_proto__init)
        (n.pointee.n_input, n.pointee.input) = arena.strings(node.inputs)
        (n.pointee.n_output, n.pointee.output) = arena.strings(node.outputs)
        (n.pointee.has_name, n.pointee.name) = arena.string(node.name)
        (n.pointee.has_op_type, n.pointee.op_type) = arena.string(node.opType)
        (n.pointee.has_domain, n.pointee.domain) = arena.string(node.domain)
        (n.pointee.has_overload, n.pointee.overload) = arena.string(node.overload)
        (n.pointee.n_attribute, n.pointee.attribute) = try arena.messages(node.attributes, attribute)
        (n.pointee.has_doc_string, n.pointee.doc_string) = arena.string(node.docString)
        (n.pointee.n_metadata_props, n.pointee.metadata_props) = pairs(node.metadataProps)
        (n.pointee.n_device_configurations, n.pointee.device_configurations) =
            arena.messages(node.deviceConfigurations) { config in
                let d = arena.message(onnx__node_device_configuration_proto__init)
                (d.pointee.has_configuration_id, d.pointee.configuration_id) = arena.string(config.configurationID)
                (d.pointee.n_sharding_spec, d.pointee.sharding_spec) = arena.messages(config.shardingSpecs, shardingSpec)
                if let s = config.pipelineStage { d.pointee.has_pipeline_stage = 1; d.pointee.pipeline_stage = s }
                arena.attach(config.unknownFields, to: &d.pointee.base)
                return d
            }
        arena.attach(node.unknownFields, to: &n.pointee.base)
        return n
    }

    func shardingSpec(_ spec: ShardingSpec) -> UnsafeMutablePointer<Onnx__ShardingSpecProto> {
        let s = arena.message(onnx__sharding_spec_proto__init)
        (s.pointee.has_tensor_name, s.pointee.tensor_name) = arena.string(spec.tensorName)
        (s.pointee.n_device, s.pointee.device) = arena.scalars(spec.devices)
        (s.pointee.n_index_to_device_group_map, s.pointee.index_to_device_group_map) =
            arena.messages(spec.indexToDeviceGroupMap) { entry in
                let e = arena.message(onnx__int_int_list_entry_proto__init)
                if let k = entry.key { e.pointee.has_key = 1; e.pointee.key = k }
                (e.pointee.n_value, e.pointee.value) = arena.scalars(entry.values)
                arena.attach(entry.unknownFields, to: &e.pointee.base)
                return e
            }
        (s.pointee.n_sharded_dim, s.pointee.sharded_dim) = arena.messages(spec.shardedDims) { dim in
            let d = arena.message(onnx__sharded_dim_proto__init)
            if let a = dim.axis { d.pointee.has_axis = 1; d.pointee.axis = a }
            (d.pointee.n_simple_sharding, d.pointee.simple_sharding) = arena.messages(dim.simpleSharding) { simple in
                let x = arena.message(onnx__simple_sharded_dim_proto__init)
                switch simple.dim {
                case .value(let v)?:
                    x.pointee.dim_case = ONNX__SIMPLE_SHARDED_DIM_PROTO__DIM_DIM_VALUE
                    x.pointee.dim_value = v
                case .param(let p)?:
                    x.pointee.dim_case = ONNX__SIMPLE_SHARDED_DIM_PROTO__DIM_DIM_PARAM
                    x.pointee.dim_param = arena.text(p)
                case nil: break
                }
                if let n = simple.numShards { x.pointee.has_num_shards = 1; x.pointee.num_shards = n }
                arena.attach(simple.unknownFields, to: &x.pointee.base)
                return x
            }
            arena.attach(dim.unknownFields, to: &d.pointee.base)
            return d
        }
        arena.attach(spec.unknownFields, to: &s.pointee.base)
        return s
    }

    func attribute(_ attr: Attribute) throws -> UnsafeMutablePointer<Onnx__AttributeProto> {
        let a = arena.message(onnx__attribute_proto__init)
        (a.pointee.has_name, a.pointee.name) = arena.string(attr.name)
        (a.pointee.has_ref_attr_name, a.pointee.ref_attr_name) = arena.string(attr.refAttrName)
        (a.pointee.has_doc_string, a.pointee.doc_string) = arena.string(attr.docString)
        if let t = attr.type {
            a.pointee.has_type = 1
            a.pointee.type = Onnx__AttributeProto__AttributeType(rawValue: UInt32(bitPattern: t.rawValue))
        }
        if let f = attr.f { a.pointee.has_f = 1; a.pointee.f = f }
        if let i = attr.i { a.pointee.has_i = 1; a.pointee.i = i }
        if let s = attr.s { a.pointee.has_s = 1; a.pointee.s = arena.copiedBytes(s) }
        a.pointee.t = try attr.t.map { try tensor($0, isInitializer: false) }
        a.pointee.g = try attr.g.map(graph)
        a.pointee.sparse_tensor = try attr.sparseTensor.map(sparseTensor)
        a.pointee.tp = attr.tp.map(typeProto)
        (a.pointee.n_floats, a.pointee.floats) = arena.scalars(attr.floats)
        (a.pointee.n_ints, a.pointee.ints) = arena.scalars(attr.ints)
        (a.pointee.n_strings, a.pointee.strings) = arena.scalars(attr.strings.map(arena.copiedBytes))
        (a.pointee.n_tensors, a.pointee.tensors) = try arena.messages(attr.tensors) { try tensor($0, isInitializer: false) }
        (a.pointee.n_graphs, a.pointee.graphs) = try arena.messages(attr.graphs, graph)
        (a.pointee.n_sparse_tensors, a.pointee.sparse_tensors) = try arena.messages(attr.sparseTensors, sparseTensor)
        (a.pointee.n_type_protos, a.pointee.type_protos) = arena.messages(attr.typeProtos, typeProto)
        arena.attach(attr.unknownFields, to: &a.pointee.base)
        return a
    }

    // MARK: Types

    func valueInfo(_ info: ValueInfo) -> UnsafeMutablePointer<Onnx__ValueInfoProto> {
        let v = arena.message(onnx__value_info_proto__init)
        (v.pointee.has_name, v.pointee.name) = arena.string(info.name)
        v.pointee.type = info.type.map(typeProto)
        (v.pointee.has_doc_string, v.pointee.doc_string) = arena.string(info.docString)
        (v.pointee.n_metadata_props, v.pointee.metadata_props) = pairs(info.metadataProps)
        arena.attach(info.unknownFields, to: &v.pointee.base)
        return v
    }

    func shape(_ shape: TensorShape) -> UnsafeMutablePointer<Onnx__TensorShapeProto> {
        let s = arena.message(onnx__tensor_shape_proto__init)
        (s.pointee.n_dim, s.pointee.dim) = arena.messages(shape.dims) { dim in
            let d = arena.message(onnx__tensor_shape_proto__dimension__init)
            switch dim.value {
            case .value(let v)?:
                d.pointee.value_case = ONNX__TENSOR_SHAPE_PROTO__DIMENSION__VALUE_DIM_VALUE
                d.pointee.dim_value = v
            case .param(let p)?:
                d.pointee.value_case = ONNX__TENSOR_SHAPE_PROTO__DIMENSION__VALUE_DIM_PARAM
                d.pointee.dim_param = arena.text(p)
            case nil: break
            }
            (d.pointee.has_denotation, d.pointee.denotation) = arena.string(dim.denotation)
            arena.attach(dim.unknownFields, to: &d.pointee.base)
            return d
        }
        arena.attach(shape.unknownFields, to: &s.pointee.base)
        return s
    }

    func tensorType(_ tt: TypeProto.TensorType) -> (Int32?, UnsafeMutablePointer<Onnx__TensorShapeProto>?) {
        (tt.elementType?.rawValue, tt.shape.map(shape))
    }

    func typeProto(_ type: TypeProto) -> UnsafeMutablePointer<Onnx__TypeProto> {
        let t = arena.message(onnx__type_proto__init)
        (t.pointee.has_denotation, t.pointee.denotation) = arena.string(type.denotation)
        switch type.value {
        case .tensor(let tt)?:
            let x = arena.message(onnx__type_proto__tensor__init)
            let (elem, shape) = tensorType(tt)
            if let elem { x.pointee.has_elem_type = 1; x.pointee.elem_type = elem }
            x.pointee.shape = shape
            arena.attach(tt.unknownFields, to: &x.pointee.base)
            t.pointee.value_case = ONNX__TYPE_PROTO__VALUE_TENSOR_TYPE
            t.pointee.tensor_type = x
        case .sparseTensor(let tt)?:
            let x = arena.message(onnx__type_proto__sparse_tensor__init)
            let (elem, shape) = tensorType(tt)
            if let elem { x.pointee.has_elem_type = 1; x.pointee.elem_type = elem }
            x.pointee.shape = shape
            arena.attach(tt.unknownFields, to: &x.pointee.base)
            t.pointee.value_case = ONNX__TYPE_PROTO__VALUE_SPARSE_TENSOR_TYPE
            t.pointee.sparse_tensor_type = x
        case .sequence(let s)?:
            let x = arena.message(onnx__type_proto__sequence__init)
            x.pointee.elem_type = s.elementType.map(typeProto)
            arena.attach(s.unknownFields, to: &x.pointee.base)
            t.pointee.value_case = ONNX__TYPE_PROTO__VALUE_SEQUENCE_TYPE
            t.pointee.sequence_type = x
        case .map(let m)?:
            let x = arena.message(onnx__type_proto__map__init)
            if let k = m.keyType { x.pointee.has_key_type = 1; x.pointee.key_type = k.rawValue }
            x.pointee.value_type = m.valueType.map(typeProto)
            arena.attach(m.unknownFields, to: &x.pointee.base)
            t.pointee.value_case = ONNX__TYPE_PROTO__VALUE_MAP_TYPE
            t.pointee.map_type = x
        case .optional(let o)?:
            let x = arena.message(onnx__type_proto__optional__init)
            x.pointee.elem_type = o.elementType.map(typeProto)
            arena.attach(o.unknownFields, to: &x.pointee.base)
            t.pointee.value_case = ONNX__TYPE_PROTO__VALUE_OPTIONAL_TYPE
            t.pointee.optional_type = x
        case .opaque(let o)?:
            let x = arena.message(onnx__type_proto__opaque__init)
            (x.pointee.has_domain, x.pointee.domain) = arena.string(o.domain)
            (x.pointee.has_name, x.pointee.name) = arena.string(o.name)
            arena.attach(o.unknownFields, to: &x.pointee.base)
            t.pointee.value_case = ONNX__TYPE_PROTO__VALUE_OPAQUE_TYPE
            t.pointee.opaque_type = x
        case nil:
            break
        }
        arena.attach(type.unknownFields, to: &t.pointee.base)
        return t
    }

    // MARK: Tensors

    func tensor(_ tensor: Tensor, isInitializer: Bool) throws -> UnsafeMutablePointer<Onnx__TensorProto> {
        try self.tensor(tensor, placed: try placement(tensor, isInitializer))
    }

    /// The tensor with its data where `placement` says.
    func tensor(_ tensor: Tensor, placed: TensorPlacement) throws -> UnsafeMutablePointer<Onnx__TensorProto> {
        let t = arena.message(onnx__tensor_proto__init)
        (t.pointee.n_dims, t.pointee.dims) = arena.scalars(tensor.dims)
        if let d = tensor.dataType { t.pointee.has_data_type = 1; t.pointee.data_type = d }
        if let seg = tensor.segment {
            let s = arena.message(onnx__tensor_proto__segment__init)
            if let b = seg.begin { s.pointee.has_begin = 1; s.pointee.begin = b }
            if let e = seg.end { s.pointee.has_end = 1; s.pointee.end = e }
            arena.attach(seg.unknownFields, to: &s.pointee.base)
            t.pointee.segment = s
        }
        (t.pointee.has_name, t.pointee.name) = arena.string(tensor.name)
        (t.pointee.has_doc_string, t.pointee.doc_string) = arena.string(tensor.docString)
        (t.pointee.n_metadata_props, t.pointee.metadata_props) = pairs(tensor.metadataProps)
        arena.attach(tensor.unknownFields, to: &t.pointee.base)

        switch placed {
        case .asIs:
            (t.pointee.n_float_data, t.pointee.float_data) = arena.typed(tensor.floatData, as: Float.self)
            (t.pointee.n_int32_data, t.pointee.int32_data) = arena.typed(tensor.int32Data, as: Int32.self)
            (t.pointee.n_string_data, t.pointee.string_data) = arena.scalars(tensor.stringData.map(arena.bytes))
            (t.pointee.n_int64_data, t.pointee.int64_data) = arena.typed(tensor.int64Data, as: Int64.self)
            if let raw = tensor.rawData { t.pointee.has_raw_data = 1; t.pointee.raw_data = arena.bytes(raw) }
            (t.pointee.n_external_data, t.pointee.external_data) = pairs(tensor.externalData)
            if let loc = tensor.dataLocation {
                t.pointee.has_data_location = 1
                t.pointee.data_location = Onnx__TensorProto__DataLocation(rawValue: UInt32(bitPattern: loc))
            }
            (t.pointee.n_double_data, t.pointee.double_data) = arena.typed(tensor.doubleData, as: Double.self)
            (t.pointee.n_uint64_data, t.pointee.uint64_data) = arena.typed(tensor.uint64Data, as: UInt64.self)
        case .inline(let bytes):
            t.pointee.has_raw_data = 1
            t.pointee.raw_data = arena.bytes(bytes)
        case .external(let location, let offset, let length):
            (t.pointee.n_external_data, t.pointee.external_data) =
                pairs(rewrittenExternalEntries(tensor.externalData, location: location, offset: offset, length: length))
            if let checksums {
                for i in 0..<t.pointee.n_external_data {
                    if let entry = t.pointee.external_data[i], entry.pointee.has_key != 0,
                       String(protoBytes: UnsafeBufferPointer(start: entry.pointee.key.data, count: entry.pointee.key.len)) == "checksum",
                       entry.pointee.has_value != 0, let value = entry.pointee.value.data {
                        checksums.slots.append(value)
                    }
                }
            }
            t.pointee.has_data_location = 1
            t.pointee.data_location = ONNX__TENSOR_PROTO__DATA_LOCATION__EXTERNAL
        }
        return t
    }

    /// The tensor's external_data entries pointing at the new place. Other
    /// keys keep their order. A `checksum` gets a placeholder of the right
    /// length when the writer can fill in the new file's digest
    /// (``checksums`` is set), and is dropped otherwise.
    func rewrittenExternalEntries(_ old: [StringPair], location: String, offset: Int, length: Int) -> [StringPair] {
        var out: [StringPair] = []
        var seen: Set<String> = []
        for var pair in old {
            switch pair.key {
            case "location": pair.value = location
            case "offset": pair.value = String(offset)
            case "length": pair.value = String(length)
            case "checksum":
                guard checksums != nil else { continue }
                pair.value = ChecksumSlots.placeholder
            default: break
            }
            if let k = pair.key { seen.insert(k) }
            out.append(pair)
        }
        if !seen.contains("location") { out.append(StringPair(key: "location", value: location)) }
        if !seen.contains("offset") { out.append(StringPair(key: "offset", value: String(offset))) }
        if !seen.contains("length") { out.append(StringPair(key: "length", value: String(length))) }
        return out
    }

    func sparseTensor(_ sparse: SparseTensor) throws -> UnsafeMutablePointer<Onnx__SparseTensorProto> {
        let s = arena.message(onnx__sparse_tensor_proto__init)
        s.pointee.values = try sparse.values.map { try tensor($0, isInitializer: false) }
        s.pointee.indices = try sparse.indices.map { try tensor($0, isInitializer: false) }
        (s.pointee.n_dims, s.pointee.dims) = arena.scalars(sparse.dims)
        arena.attach(sparse.unknownFields, to: &s.pointee.base)
        return s
    }
}

/// The bytes of `checksum` entries written as placeholders; the writer
/// overwrites them in place with the data file's SHA-1 (40 hex digits, the
/// same length, so the packed size does not change).
final class ChecksumSlots {
    static let placeholder = String(repeating: "0", count: 40)
    var slots: [UnsafeMutablePointer<UInt8>] = []

    func fill(with digest: String) {
        let bytes = Array(digest.utf8)
        precondition(bytes.count == 40, "SHA-1 digests have 40 hex digits")
        for slot in slots {
            bytes.withUnsafeBufferPointer { _ = memcpy(slot, $0.baseAddress!, 40) }
        }
    }
}

/// Bytes of `value` as a protobuf varint.
func varintSize(_ value: UInt64) -> Int {
    var v = value, n = 1
    while v >= 0x80 { v >>= 7; n += 1 }
    return n
}

/// The main graph's initializers, held out of the message tree.
///
/// A protobuf-c `TensorProto` struct is 264 bytes whatever the tensor holds:
/// a tree of a million tiny initializers was 300 MB, eight times their
/// file. The writer instead builds each one when it is packed, in a scratch
/// arena reset between tensors, and packs the graph around them (see
/// ``EncodedModel/pack(to:)``).
final class StreamedInitializers {
    let tensors: [Tensor]
    /// The graph's node in the tree (which has no initializers).
    let graph: UnsafeMutablePointer<Onnx__GraphProto>
    /// Initializers already built in the tree's arena (placed inline or
    /// external), by index, in order.
    var prebuilt: [(index: Int, tensor: UnsafeMutablePointer<Onnx__TensorProto>)] = []
    /// Bytes of all the initializer fields (tag, length, message).
    var fieldsSize = 0

    init(tensors: [Tensor], graph: UnsafeMutablePointer<Onnx__GraphProto>) {
        self.tensors = tensors
        self.graph = graph
    }
}

/// A model ready to pack: the message tree and, when the main graph has
/// initializers, those initializers (``StreamedInitializers``). Packs to the
/// same bytes as the whole tree would: protobuf-c writes fields in field
/// number order and unknown fields last, so the model is written as its
/// fields before `graph` (7), the graph, then the rest; the graph as its
/// `node` and `name` fields (1, 2), the initializers (5), then the rest.
struct EncodedModel {
    let tree: UnsafeMutablePointer<Onnx__ModelProto>
    let initializers: StreamedInitializers?
    /// Holds the tree's memory for as long as this value lives.
    let arena: CArena

    /// Bytes of the packed message.
    var packedSize: Int {
        guard let held = initializers else { return onnx__model_proto__get_packed_size(tree) }
        let withoutInitializers = onnx__graph_proto__get_packed_size(held.graph)
        let graphSize = withoutInitializers + held.fieldsSize
        return onnx__model_proto__get_packed_size(tree) - varintSize(UInt64(withoutInitializers))
            + varintSize(UInt64(graphSize)) + held.fieldsSize
    }

    func pack(to sink: FileSink) throws {
        guard let held = initializers else {
            try sink.pack { onnx__model_proto__pack_to_buffer(tree, $0) }
            return
        }
        let start = sink.written
        let model = tree.pointee, graph = held.graph.pointee
        var before = model, after = model
        before.graph = nil
        before.n_opset_import = 0; before.opset_import = nil
        before.n_metadata_props = 0; before.metadata_props = nil
        before.n_training_info = 0; before.training_info = nil
        before.n_functions = 0; before.functions = nil
        before.n_configuration = 0; before.configuration = nil
        before.base.n_unknown_fields = 0; before.base.unknown_fields = nil
        after.has_ir_version = 0; after.has_producer_name = 0; after.has_producer_version = 0
        after.has_domain = 0; after.has_model_version = 0; after.has_doc_string = 0
        after.graph = nil
        var graphHead = graph, graphTail = graph
        graphHead.has_doc_string = 0
        graphHead.n_input = 0; graphHead.input = nil
        graphHead.n_output = 0; graphHead.output = nil
        graphHead.n_value_info = 0; graphHead.value_info = nil
        graphHead.n_quantization_annotation = 0; graphHead.quantization_annotation = nil
        graphHead.n_sparse_initializer = 0; graphHead.sparse_initializer = nil
        graphHead.n_metadata_props = 0; graphHead.metadata_props = nil
        graphHead.base.n_unknown_fields = 0; graphHead.base.unknown_fields = nil
        graphTail.n_node = 0; graphTail.node = nil
        graphTail.has_name = 0

        try sink.pack { onnx__model_proto__pack_to_buffer(&before, $0) }
        sink.appendVarint(7 << 3 | 2)
        sink.appendVarint(UInt64(onnx__graph_proto__get_packed_size(held.graph) + held.fieldsSize))
        try sink.pack { onnx__graph_proto__pack_to_buffer(&graphHead, $0) }
        let scratch = CArena()
        let asIs = ProtoEncoder(arena: scratch, placement: { _, _ in .asIs })
        var next = 0
        for (i, t) in held.tensors.enumerated() {
            let built: UnsafeMutablePointer<Onnx__TensorProto>
            if next < held.prebuilt.count, held.prebuilt[next].index == i {
                built = held.prebuilt[next].tensor
                next += 1
            } else {
                scratch.reset()
                built = try asIs.tensor(t, placed: .asIs)
            }
            sink.appendVarint(5 << 3 | 2)
            sink.appendVarint(UInt64(onnx__tensor_proto__get_packed_size(built)))
            try sink.pack { onnx__tensor_proto__pack_to_buffer(built, $0) }
        }
        scratch.reset()
        try sink.pack { onnx__graph_proto__pack_to_buffer(&graphTail, $0) }
        try sink.pack { onnx__model_proto__pack_to_buffer(&after, $0) }
        guard sink.written - start == packedSize else {
            throw ModelFileError(file: sink.displayName, "internal error: wrote \(sink.written - start) bytes of a \(packedSize)-byte message")
        }
    }
}
