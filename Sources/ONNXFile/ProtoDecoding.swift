#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif
import CONNX
import ONNXGraph

/// Converts an unpacked protobuf-c message tree into the Swift IR.
///
/// Nothing in the IR points into the tree, so the reader frees it as soon as
/// the model is decoded. Tensor payloads (`raw_data` and the typed `*_data`
/// arrays) are not copied one by one into their own allocations: payloads of
/// 1 KiB or more are taken over from the tree (the C array moves to a
/// ``CAllocation`` and the tree's pointer is cleared, so freeing the tree
/// leaves it alone), smaller ones are copied into a shared ``PayloadArena``.
/// Borrowing small payloads from the tree instead kept the whole tree — for a
/// million tiny initializers 300 MB of C structs, names and dims arrays —
/// alive for as long as any one tensor lived. Everything else (names,
/// attributes, shapes) is small and copied into Swift values.
struct ProtoDecoder {
    /// Where small payloads are copied.
    let payloads = PayloadArena()
    /// Shares the dims arrays of tensors of the same shape.
    let shapes = ShapeInterner()
    /// Resolves `data_location = EXTERNAL` tensors.
    let external: ExternalDataResolver
    /// Tensor problems are reported with this file name.
    let fileName: String
    /// Payloads left in the mapped file by ``Compaction``, by marker index;
    /// nil when the file was unpacked whole (markers are then ordinary unknown fields).
    let slices: [ByteBuffer]?
    /// The file the model was read from, and the graphs ``Compaction`` left
    /// the initializers of in it (by marker index); see ``graph(_:)``.
    var file: UnsafeRawBufferPointer? = nil
    var graphRanges: [Range<Int>] = []
    /// Makes the buffer for a payload left in `file`.
    var payload: ((_ offset: Int, _ length: Int) -> ByteBuffer)? = nil

    // MARK: Helpers

    // Text fields are `bytes` in Proto/onnx.proto: they arrive as the file's
    // exact bytes (NULs and invalid UTF-8 included) and become Strings through
    // the lossless ``ProtoBytes`` mapping.

    /// An optional text field: nil when absent (proto2 presence), else its text.
    func string(_ has: protobuf_c_boolean, _ data: ProtobufCBinaryData) -> String? {
        has != 0 ? text(data) : nil
    }

    func text(_ data: ProtobufCBinaryData) -> String {
        guard let d = data.data, data.len > 0 else { return "" }
        return String(protoBytes: UnsafeBufferPointer(start: d, count: data.len))
    }

    func strings(_ n: Int, _ p: UnsafeMutablePointer<ProtobufCBinaryData>?) -> [String] {
        scalars(n, p).map(text)
    }

    func messages<C, T>(_ n: Int, _ p: UnsafeMutablePointer<UnsafeMutablePointer<C>?>?,
                        _ convert: (UnsafeMutablePointer<C>) throws -> T) rethrows -> [T] {
        guard let p, n > 0 else { return [] }
        var out: [T] = []
        out.reserveCapacity(n)
        for i in 0..<n { if let m = p[i] { out.append(try convert(m)) } }
        return out
    }

    func scalars<T>(_ n: Int, _ p: UnsafeMutablePointer<T>?) -> [T] {
        guard let p, n > 0 else { return [] }
        return Array(UnsafeBufferPointer(start: p, count: n))
    }

    /// A typed repeated field's elements as bytes the IR owns: copied when
    /// small, else taken from the tree (`p` is cleared; see the type's comment).
    func owned<T>(_ n: Int, _ p: inout UnsafeMutablePointer<T>?) -> ByteBuffer {
        guard let base = p, n > 0 else { return .empty }
        let count = n * MemoryLayout<T>.stride
        if count < Compaction.threshold { return payloads.copy(UnsafeRawPointer(base), count: count) }
        p = nil
        let owner = CAllocation(UnsafeMutableRawPointer(base))
        return ByteBuffer(borrowing: UnsafeRawPointer(base), count: count, owner: owner)
    }

    /// A bytes field's contents as bytes the IR owns (as ``owned(_:_:)``).
    func owned(_ data: inout ProtobufCBinaryData) -> ByteBuffer {
        guard let base = data.data, data.len > 0 else { return .empty }
        if data.len < Compaction.threshold { return payloads.copy(UnsafeRawPointer(base), count: data.len) }
        let count = data.len
        data.data = nil
        data.len = 0
        return ByteBuffer(borrowing: UnsafeRawPointer(base), count: count, owner: CAllocation(UnsafeMutableRawPointer(base)))
    }

    func bytes(_ data: ProtobufCBinaryData) -> [UInt8] {
        guard let d = data.data, data.len > 0 else { return [] }
        return Array(UnsafeBufferPointer(start: d, count: data.len))
    }

    func unknown(_ base: ProtobufCMessage) -> UnknownFields {
        guard base.n_unknown_fields > 0, let fields = base.unknown_fields else { return UnknownFields() }
        return UnknownFields((0..<Int(base.n_unknown_fields)).map { i in
            let f = fields[i]
            let payload = f.data.map { Array(UnsafeBufferPointer(start: $0, count: f.len)) } ?? []
            return UnknownFields.Field(number: f.tag, wireType: UInt8(f.wire_type.rawValue), payload: payload)
        })
    }

    func pairs(_ n: Int, _ p: UnsafeMutablePointer<UnsafeMutablePointer<Onnx__StringStringEntryProto>?>?) -> [StringPair] {
        messages(n, p) { e in
            var pair = StringPair(key: string(e.pointee.has_key, e.pointee.key), value: string(e.pointee.has_value, e.pointee.value))
            pair.unknownFields = unknown(e.pointee.base)
            return pair
        }
    }

    func opsets(_ n: Int, _ p: UnsafeMutablePointer<UnsafeMutablePointer<Onnx__OperatorSetIdProto>?>?) -> [OperatorSetID] {
        messages(n, p) { o in
            var id = OperatorSetID(domain: string(o.pointee.has_domain, o.pointee.domain),
                                   version: o.pointee.has_version != 0 ? o.pointee.version : nil)
            id.unknownFields = unknown(o.pointee.base)
            return id
        }
    }

    // MARK: Model

    func model(_ m: UnsafeMutablePointer<Onnx__ModelProto>) throws -> Model {
        let p = m.pointee
        var model = Model()
        model.irVersion = p.has_ir_version != 0 ? p.ir_version : nil
        model.opsetImports = opsets(p.n_opset_import, p.opset_import)
        model.producerName = string(p.has_producer_name, p.producer_name)
        model.producerVersion = string(p.has_producer_version, p.producer_version)
        model.domain = string(p.has_domain, p.domain)
        model.modelVersion = p.has_model_version != 0 ? p.model_version : nil
        model.docString = string(p.has_doc_string, p.doc_string)
        model.graph = try p.graph.map(graph)
        model.metadataProps = pairs(p.n_metadata_props, p.metadata_props)
        model.trainingInfo = try messages(p.n_training_info, p.training_info) { t in
            var info = TrainingInfo()
            info.initialization = try t.pointee.initialization.map(graph)
            info.algorithm = try t.pointee.algorithm.map(graph)
            info.initializationBinding = pairs(t.pointee.n_initialization_binding, t.pointee.initialization_binding)
            info.updateBinding = pairs(t.pointee.n_update_binding, t.pointee.update_binding)
            info.unknownFields = unknown(t.pointee.base)
            return info
        }
        model.functions = try messages(p.n_functions, p.functions, function)
        model.configuration = messages(p.n_configuration, p.configuration) { c in
            var config = DeviceConfiguration()
            config.name = string(c.pointee.has_name, c.pointee.name)
            config.numDevices = c.pointee.has_num_devices != 0 ? c.pointee.num_devices : nil
            config.devices = strings(c.pointee.n_device, c.pointee.device)
            config.unknownFields = unknown(c.pointee.base)
            return config
        }
        model.unknownFields = unknown(p.base)
        return model
    }

    func function(_ f: UnsafeMutablePointer<Onnx__FunctionProto>) throws -> Function {
        let p = f.pointee
        var fn = Function()
        fn.name = string(p.has_name, p.name)
        fn.inputs = strings(p.n_input, p.input)
        fn.outputs = strings(p.n_output, p.output)
        fn.attributeNames = strings(p.n_attribute, p.attribute)
        fn.attributeDefaults = try messages(p.n_attribute_proto, p.attribute_proto, attribute)
        fn.nodes = try messages(p.n_node, p.node, node)
        fn.docString = string(p.has_doc_string, p.doc_string)
        fn.opsetImports = opsets(p.n_opset_import, p.opset_import)
        fn.domain = string(p.has_domain, p.domain)
        fn.overload = string(p.has_overload, p.overload)
        fn.valueInfo = messages(p.n_value_info, p.value_info, valueInfo)
        fn.metadataProps = pairs(p.n_metadata_props, p.metadata_props)
        fn.unknownFields = unknown(p.base)
        return fn
    }

    // MARK: Graph and nodes

    func graph(_ g: UnsafeMutablePointer<Onnx__GraphProto>) throws -> Graph {
        let p = g.pointee
        var graph = Graph()
        graph.nodes = try messages(p.n_node, p.node, node)
        for i in graph.nodes.indices { graph.nodes[i].origin = NodeOrigin(index: i) }
        graph.name = string(p.has_name, p.name)
        graph.initializers = try messages(p.n_initializer, p.initializer) { try tensor($0) }
        graph.sparseInitializers = try messages(p.n_sparse_initializer, p.sparse_initializer, sparseTensor)
        graph.docString = string(p.has_doc_string, p.doc_string)
        graph.inputs = messages(p.n_input, p.input, valueInfo)
        graph.outputs = messages(p.n_output, p.output, valueInfo)
        graph.valueInfo = messages(p.n_value_info, p.value_info, valueInfo)
        graph.quantizationAnnotations = messages(p.n_quantization_annotation, p.quantization_annotation) { a in
            var ann = TensorAnnotation(tensorName: string(a.pointee.has_tensor_name, a.pointee.tensor_name))
            ann.quantParameterTensorNames = pairs(a.pointee.n_quant_parameter_tensor_names,
                                                  a.pointee.quant_parameter_tensor_names)
            ann.unknownFields = unknown(a.pointee.base)
            return ann
        }
        graph.metadataProps = pairs(p.n_metadata_props, p.metadata_props)
        var unknownFields = unknown(p.base)
        if slices != nil, let marker = unknownFields.fields.lastIndex(where: { $0.number == UInt32(Compaction.markerField) }) {
            // Compaction left this graph's initializers in the file.
            guard let k = decodeVarint(unknownFields.fields[marker].payload), k < graphRanges.count else {
                throw ModelFileError(file: fileName, "internal error locating the initializers of graph '\(graph.name ?? "<unnamed>")'")
            }
            unknownFields.fields.remove(at: marker)
            graph.initializers = try fileInitializers(graphRanges[k])
        }
        graph.unknownFields = unknownFields
        return graph
    }

    /// The initializers of the graph at `range` of the file, unpacked and
    /// converted one at a time, so that only one tensor's C struct exists
    /// at once.
    func fileInitializers(_ range: Range<Int>) throws -> [Tensor] {
        guard let file, let payload else { return [] }
        var result: [Tensor] = []
        // Exactly: growing by doubling would hold 1.5x the array while it copies.
        result.reserveCapacity(Compaction.initializerCount(ofGraph: range, in: file))
        do {
            try Compaction.initializers(ofGraph: range, in: file) { bytes, stripped in
                let one: UInt8 = 0
                let unpacked = withUnsafePointer(to: one) { empty in
                    onnx__tensor_proto__unpack(nil, bytes.count, bytes.baseAddress ?? empty)
                }
                guard let unpacked else { throw UnpackFailed() }
                defer { onnx__tensor_proto__free_unpacked(unpacked, nil) }
                result.append(try tensor(unpacked, slices: stripped.map { payload($0.offset, $0.length) }))
            }
        } catch is UnpackFailed {
            throw ModelFileError(file: fileName, WireScan.diagnose(file))
        } catch let error as ModelFileError {
            throw error
        } catch {
            throw ModelFileError(file: fileName, WireScan.diagnose(file))
        }
        return result
    }

    private struct UnpackFailed: Error {}

    func node(_ n: UnsafeMutablePointer<Onnx__NodeProto>) throws -> Node {
        let p = n.pointee
        guard let opType = string(p.has_op_type, p.op_type), !opType.isEmpty else {
            let label = string(p.has_name, p.name).map { "node '\($0)'" } ?? "a node"
            throw ModelFileError(file: fileName, "\(label) has no op_type")
        }
        var node = Node(opType: opType, inputs: strings(p.n_input, p.input), outputs: strings(p.n_output, p.output),
                        name: string(p.has_name, p.name), domain: string(p.has_domain, p.domain))
        node.overload = string(p.has_overload, p.overload)
        node.attributes = try messages(p.n_attribute, p.attribute, attribute)
        node.docString = string(p.has_doc_string, p.doc_string)
        node.metadataProps = pairs(p.n_metadata_props, p.metadata_props)
        node.deviceConfigurations = messages(p.n_device_configurations, p.device_configurations) { d in
            var config = NodeDeviceConfiguration()
            config.configurationID = string(d.pointee.has_configuration_id, d.pointee.configuration_id)
            config.shardingSpecs = messages(d.pointee.n_sharding_spec, d.pointee.sharding_spec, shardingSpec)
            config.pipelineStage = d.pointee.has_pipeline_stage != 0 ? d.pointee.pipeline_stage : nil
            config.unknownFields = unknown(d.pointee.base)
            return config
        }
        node.unknownFields = unknown(p.base)
        return node
    }

    func shardingSpec(_ s: UnsafeMutablePointer<Onnx__ShardingSpecProto>) -> ShardingSpec {
        let p = s.pointee
        var spec = ShardingSpec()
        spec.tensorName = string(p.has_tensor_name, p.tensor_name)
        spec.devices = scalars(p.n_device, p.device)
        spec.indexToDeviceGroupMap = messages(p.n_index_to_device_group_map, p.index_to_device_group_map) { e in
            var entry = IntIntList()
            entry.key = e.pointee.has_key != 0 ? e.pointee.key : nil
            entry.values = scalars(e.pointee.n_value, e.pointee.value)
            entry.unknownFields = unknown(e.pointee.base)
            return entry
        }
        spec.shardedDims = messages(p.n_sharded_dim, p.sharded_dim) { d in
            var dim = ShardedDim()
            dim.axis = d.pointee.has_axis != 0 ? d.pointee.axis : nil
            dim.simpleSharding = messages(d.pointee.n_simple_sharding, d.pointee.simple_sharding) { s in
                var simple = SimpleShardedDim()
                switch s.pointee.dim_case {
                case ONNX__SIMPLE_SHARDED_DIM_PROTO__DIM_DIM_VALUE: simple.dim = .value(s.pointee.dim_value)
                case ONNX__SIMPLE_SHARDED_DIM_PROTO__DIM_DIM_PARAM: simple.dim = .param(text(s.pointee.dim_param))
                default: simple.dim = nil
                }
                simple.numShards = s.pointee.has_num_shards != 0 ? s.pointee.num_shards : nil
                simple.unknownFields = unknown(s.pointee.base)
                return simple
            }
            dim.unknownFields = unknown(d.pointee.base)
            return dim
        }
        spec.unknownFields = unknown(p.base)
        return spec
    }

    func attribute(_ a: UnsafeMutablePointer<Onnx__AttributeProto>) throws -> Attribute {
        let p = a.pointee
        var attr = Attribute(name: string(p.has_name, p.name))
        attr.refAttrName = string(p.has_ref_attr_name, p.ref_attr_name)
        attr.docString = string(p.has_doc_string, p.doc_string)
        attr.type = p.has_type != 0 ? Attribute.Kind(rawValue: Int32(bitPattern: p.type.rawValue)) : nil
        attr.f = p.has_f != 0 ? p.f : nil
        attr.i = p.has_i != 0 ? p.i : nil
        attr.s = p.has_s != 0 ? bytes(p.s) : nil
        attr.t = try p.t.map { try tensor($0) }
        attr.g = try p.g.map(graph)
        attr.sparseTensor = try p.sparse_tensor.map(sparseTensor)
        attr.tp = p.tp.map(typeProto)
        attr.floats = scalars(p.n_floats, p.floats)
        attr.ints = scalars(p.n_ints, p.ints)
        attr.strings = scalars(p.n_strings, p.strings).map(bytes)
        attr.tensors = try messages(p.n_tensors, p.tensors) { try tensor($0) }
        attr.graphs = try messages(p.n_graphs, p.graphs, graph)
        attr.sparseTensors = try messages(p.n_sparse_tensors, p.sparse_tensors, sparseTensor)
        attr.typeProtos = messages(p.n_type_protos, p.type_protos, typeProto)
        attr.unknownFields = unknown(p.base)
        return attr
    }

    // MARK: Types

    func valueInfo(_ v: UnsafeMutablePointer<Onnx__ValueInfoProto>) -> ValueInfo {
        let p = v.pointee
        var info = ValueInfo(name: string(p.has_name, p.name), type: p.type.map(typeProto))
        info.docString = string(p.has_doc_string, p.doc_string)
        info.metadataProps = pairs(p.n_metadata_props, p.metadata_props)
        info.unknownFields = unknown(p.base)
        return info
    }

    func shape(_ s: UnsafeMutablePointer<Onnx__TensorShapeProto>) -> TensorShape {
        var shape = TensorShape(dims: messages(s.pointee.n_dim, s.pointee.dim) { d in
            var dim = TensorShape.Dimension(value: nil, denotation: string(d.pointee.has_denotation, d.pointee.denotation))
            switch d.pointee.value_case {
            case ONNX__TENSOR_SHAPE_PROTO__DIMENSION__VALUE_DIM_VALUE: dim.value = .value(d.pointee.dim_value)
            case ONNX__TENSOR_SHAPE_PROTO__DIMENSION__VALUE_DIM_PARAM: dim.value = .param(text(d.pointee.dim_param))
            default: dim.value = nil
            }
            dim.unknownFields = unknown(d.pointee.base)
            return dim
        })
        shape.unknownFields = unknown(s.pointee.base)
        return shape
    }

    func typeProto(_ t: UnsafeMutablePointer<Onnx__TypeProto>) -> TypeProto {
        let p = t.pointee
        var type = TypeProto(value: nil, denotation: string(p.has_denotation, p.denotation))
        switch p.value_case {
        case ONNX__TYPE_PROTO__VALUE_TENSOR_TYPE:
            if let x = p.tensor_type {
                var tt = TypeProto.TensorType(
                    elementType: x.pointee.has_elem_type != 0 ? DataType(rawValue: x.pointee.elem_type) : nil,
                    shape: x.pointee.shape.map(shape))
                tt.unknownFields = unknown(x.pointee.base)
                type.value = .tensor(tt)
            }
        case ONNX__TYPE_PROTO__VALUE_SPARSE_TENSOR_TYPE:
            if let x = p.sparse_tensor_type {
                var tt = TypeProto.TensorType(
                    elementType: x.pointee.has_elem_type != 0 ? DataType(rawValue: x.pointee.elem_type) : nil,
                    shape: x.pointee.shape.map(shape))
                tt.unknownFields = unknown(x.pointee.base)
                type.value = .sparseTensor(tt)
            }
        case ONNX__TYPE_PROTO__VALUE_SEQUENCE_TYPE:
            if let x = p.sequence_type {
                var s = TypeProto.Sequence(elementType: x.pointee.elem_type.map(typeProto))
                s.unknownFields = unknown(x.pointee.base)
                type.value = .sequence(s)
            }
        case ONNX__TYPE_PROTO__VALUE_MAP_TYPE:
            if let x = p.map_type {
                var m = TypeProto.Map(
                    keyType: x.pointee.has_key_type != 0 ? DataType(rawValue: x.pointee.key_type) : nil,
                    valueType: x.pointee.value_type.map(typeProto))
                m.unknownFields = unknown(x.pointee.base)
                type.value = .map(m)
            }
        case ONNX__TYPE_PROTO__VALUE_OPTIONAL_TYPE:
            if let x = p.optional_type {
                var o = TypeProto.OptionalType(elementType: x.pointee.elem_type.map(typeProto))
                o.unknownFields = unknown(x.pointee.base)
                type.value = .optional(o)
            }
        case ONNX__TYPE_PROTO__VALUE_OPAQUE_TYPE:
            if let x = p.opaque_type {
                var o = TypeProto.Opaque(domain: string(x.pointee.has_domain, x.pointee.domain), name: string(x.pointee.has_name, x.pointee.name))
                o.unknownFields = unknown(x.pointee.base)
                type.value = .opaque(o)
            }
        default:
            break
        }
        type.unknownFields = unknown(p.base)
        return type
    }

    // MARK: Tensors

    /// Converts a tensor; `slices` are the payloads its raw_data markers
    /// index (by default the model's, from ``Compaction``).
    func tensor(_ t: UnsafeMutablePointer<Onnx__TensorProto>, slices local: [ByteBuffer]? = nil) throws -> Tensor {
        let p = t.pointee
        var tensor = Tensor(name: string(p.has_name, p.name), elementType: .undefined, dims: shapes.dims(p.n_dims, p.dims))
        tensor.dataType = p.has_data_type != 0 ? p.data_type : nil
        if let s = p.segment {
            var seg = Tensor.Segment(begin: s.pointee.has_begin != 0 ? s.pointee.begin : nil,
                                     end: s.pointee.has_end != 0 ? s.pointee.end : nil)
            seg.unknownFields = unknown(s.pointee.base)
            tensor.segment = seg
        }
        tensor.floatData = owned(p.n_float_data, &t.pointee.float_data)
        tensor.int32Data = owned(p.n_int32_data, &t.pointee.int32_data)
        if p.n_string_data > 0, let strings = p.string_data {
            tensor.stringData = (0..<p.n_string_data).map { owned(&strings[$0]) }
        }
        tensor.int64Data = owned(p.n_int64_data, &t.pointee.int64_data)
        tensor.docString = string(p.has_doc_string, p.doc_string)
        tensor.rawData = p.has_raw_data != 0 ? owned(&t.pointee.raw_data) : nil
        tensor.externalData = pairs(p.n_external_data, p.external_data)
        tensor.dataLocation = p.has_data_location != 0 ? Int32(bitPattern: p.data_location.rawValue) : nil
        tensor.doubleData = owned(p.n_double_data, &t.pointee.double_data)
        tensor.uint64Data = owned(p.n_uint64_data, &t.pointee.uint64_data)
        tensor.metadataProps = pairs(p.n_metadata_props, p.metadata_props)
        tensor.unknownFields = unknown(p.base)
        if let slices = local ?? slices,
           let marker = tensor.unknownFields.fields.lastIndex(where: { $0.number == UInt32(Compaction.markerField) }) {
            let index = decodeVarint(tensor.unknownFields.fields[marker].payload)
            guard let index, index < slices.count else {
                throw ModelFileError(file: fileName, "tensor '\(tensor.name ?? "<unnamed>")': internal error locating raw_data")
            }
            tensor.unknownFields.fields.remove(at: marker)
            tensor.rawData = slices[index]
        }
        if tensor.location == .external, external.resolves {
            tensor.externalBytes = try external.resolve(tensor)
        }
        try TensorValidation.check(tensor, file: fileName)
        return tensor
    }

    func decodeVarint(_ bytes: [UInt8]) -> Int? {
        var value = 0, shift = 0
        for b in bytes {
            guard shift < 63 else { return nil }
            value |= Int(b & 0x7F) << shift
            if b & 0x80 == 0 { return value }
            shift += 7
        }
        return nil
    }

    func sparseTensor(_ s: UnsafeMutablePointer<Onnx__SparseTensorProto>) throws -> SparseTensor {
        var sparse = SparseTensor(values: try s.pointee.values.map { try tensor($0) },
                                  indices: try s.pointee.indices.map { try tensor($0) },
                                  dims: scalars(s.pointee.n_dims, s.pointee.dims))
        sparse.unknownFields = unknown(s.pointee.base)
        return sparse
    }
}

/// A C allocation (an array or bytes field taken over from an unpacked
/// tree), freed with the allocator protobuf-c's default allocator uses.
final class CAllocation {
    let pointer: UnsafeMutableRawPointer
    init(_ pointer: UnsafeMutableRawPointer) { self.pointer = pointer }
    deinit { free(pointer) }
}

/// Memory for the small tensor payloads of one model: 256 KiB chunks, each
/// payload 8-byte aligned in one of them (the IR reads elements unaligned
/// anyway; 8 keeps typed views of Int64/Double fields aligned for the
/// writer). A chunk lives as long as any tensor in it — a pass that replaces
/// a tiny tensor does not give its few bytes back, which is the price of not
/// making a million allocations.
final class PayloadArena {
    final class Chunk {
        let base: UnsafeMutableRawPointer
        init(size: Int) { base = malloc(size)! }
        deinit { free(base) }
    }
    static let chunkSize = 256 << 10
    private var chunk: Chunk?
    private var used = 0

    /// Copies `count` bytes (under ``Compaction/threshold``) from `source`.
    func copy(_ source: UnsafeRawPointer, count: Int) -> ByteBuffer {
        guard count > 0 else { return .empty }
        var at = (used + 7) & ~7
        if chunk == nil || at + count > PayloadArena.chunkSize {
            chunk = Chunk(size: max(PayloadArena.chunkSize, count))
            at = 0
        }
        let c = chunk!
        memcpy(c.base + at, source, count)
        used = at + count
        return ByteBuffer(borrowing: c.base + at, count: count, owner: c)
    }
}

/// Gives tensors of the same small shape one shared `dims` array (arrays are
/// copy-on-write: a pass that changes one tensor's dims gets its own). A
/// million tensors of shape [4] otherwise hold a million 48-byte arrays.
final class ShapeInterner {
    private var table: [[Int64]: [Int64]] = [:]

    func dims(_ n: Int, _ p: UnsafeMutablePointer<Int64>?) -> [Int64] {
        guard let p, n > 0 else { return [] }
        let dims = Array(UnsafeBufferPointer(start: p, count: n))
        guard n <= 4 else { return dims }
        if let shared = table[dims] { return shared }
        if table.count < 4096 { table[dims] = dims }
        return dims
    }
}
