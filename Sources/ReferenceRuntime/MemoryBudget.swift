#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif
import Foundation
import Synchronization

/// How many bytes of tensors the reference runtime may hold at once.
///
/// A 300-byte model can ask for anything: a dilation of 8000 makes the
/// verifier's input 64 M elements, a declared input `[1, 1, 46000, 46000]`
/// is 17 GB, `ConstantOfShape` writes whatever its input says. Without a
/// bound such a file either takes the machine's memory or dies in the
/// allocator (`failed to allocate`, an abort). With one, every allocation a
/// shape decides is weighed first and refused with
/// ``MemoryBudgetExceeded`` — a fold then skips the check it cannot afford
/// and says why, `bnfold check` exits 2 with the reason.
///
/// The default is half of the memory this process can actually get: the
/// smallest of the machine's RAM, the cgroup's `memory.max` (containers,
/// CI runners) and `RLIMIT_AS`. Half, because the float64 reference and
/// the model's own weights live beside the runtime's tensors. `--max-memory`
/// or `BNFOLD_MAX_MEMORY` change it.
public struct MemoryBudget: Sendable, Equatable, CustomStringConvertible {
    public var bytes: Int

    public init(bytes: Int) { self.bytes = max(0, bytes) }

    /// The environment variable that sets the default budget.
    public static let environmentVariable = "BNFOLD_MAX_MEMORY"

    /// Parses `512M`, `4G`, `1.5GiB`, `2048` (bytes), `64k`: a number and an
    /// optional binary unit (k, M, G, T; `B`, `iB` accepted and ignored).
    /// Nil for anything else, negative or non-finite sizes included.
    public init?(parsing text: String) {
        var s = Substring(text.trimmingCharacters(in: .whitespaces))
        if s.hasSuffix("iB") { s = s.dropLast(2) } else if s.hasSuffix("B") || s.hasSuffix("b") { s = s.dropLast() }
        var scale = 1.0
        if let last = s.last, let power = "KMGT".firstIndex(of: Character(last.uppercased())) {
            scale = pow(1024, Double("KMGT".distance(from: "KMGT".startIndex, to: power) + 1))
            s = s.dropLast()
        }
        guard let value = Double(s), value.isFinite, value >= 0 else { return nil }
        let total = value * scale
        guard total < 0x1p62 else { return nil }
        self.init(bytes: Int(total))
    }

    /// The budget when none is given: `BNFOLD_MAX_MEMORY` if set and valid,
    /// else half of ``availableMemory()``.
    public static func processDefault(environment: [String: String] = ProcessInfo.processInfo.environment) throws -> MemoryBudget {
        if let text = environment[environmentVariable] {
            guard let budget = MemoryBudget(parsing: text) else {
                throw MemoryBudgetError("\(environmentVariable)='\(text)' is not a size (examples: 512M, 4G, 1.5GiB)")
            }
            return budget
        }
        return MemoryBudget(bytes: availableMemory() / 2)
    }

    /// The least of physical memory, the cgroup v2/v1 limit and RLIMIT_AS.
    public static func availableMemory() -> Int {
        var limit = Int(clamping: ProcessInfo.processInfo.physicalMemory)
        for path in ["/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory/memory.limit_in_bytes"] {
            if let text = try? String(contentsOfFile: path, encoding: .utf8),
               let value = Int(text.trimmingCharacters(in: .whitespacesAndNewlines)), value > 0 {
                limit = min(limit, value)
            }
        }
        var rl = rlimit()
        if getrlimit(Int32(RLIMIT_AS.rawValue), &rl) == 0, rl.rlim_cur != rlim_t.max {
            limit = min(limit, Int(clamping: rl.rlim_cur))
        }
        return limit
    }

    public var description: String { MemoryBudget.format(bytes) }

    /// `1.5 GiB`, `512 MiB`, `300 B`: for messages.
    public static func format(_ bytes: Int) -> String {
        let units = ["B", "KiB", "MiB", "GiB", "TiB"]
        var value = Double(bytes), unit = 0
        while value >= 1024, unit < units.count - 1 { value /= 1024; unit += 1 }
        if unit == 0 { return "\(bytes) B" }
        let rounded = (value * 10).rounded() / 10
        return rounded == rounded.rounded() ? "\(Int(rounded)) \(units[unit])" : "\(rounded) \(units[unit])"
    }

    /// The budget governing this task's runtime work, set by ``enforce(_:)``;
    /// nil: unbounded (library default, so existing callers see no change).
    @TaskLocal public static var inForce: MemoryBudget?

    /// Runs `body` with this budget governing every comparison it makes
    /// (``measured(_:)`` scopes; task-local, so concurrent callers do not
    /// see each other's budget).
    public func enforce<T>(_ body: () throws -> T) rethrows -> T {
        try MemoryBudget.$inForce.withValue(self, operation: body)
    }

    /// Runs `body` with a fresh account under the budget in force: every
    /// interpreter built and run inside counts its tensors there, so that
    /// one comparison (its models, their float64 reference, the inputs) is
    /// bounded as a whole. Without a budget in force, `body` just runs.
    public static func measured<T>(_ body: () throws -> T) rethrows -> T {
        guard let budget = inForce else { return try body() }
        return try MemoryLedger.$current.withValue(MemoryLedger(budget: budget), operation: body)
    }
}

/// A size given to ``MemoryBudget`` that is not a size.
public struct MemoryBudgetError: Error, CustomStringConvertible, Sendable {
    public let description: String
    init(_ description: String) { self.description = description }
}

/// An allocation the budget (or the allocator) refused: what was asked,
/// what was already held, and the limit.
public struct MemoryBudgetExceeded: Error, CustomStringConvertible, Sendable, Equatable {
    /// Bytes the refused allocation needed.
    public let requested: Int
    /// Bytes of tensors held when it was asked for.
    public let held: Int
    /// The budget; nil when the budget allowed it but the system's allocator refused.
    public let budget: Int?

    public var description: String {
        if let budget {
            return "needs \(MemoryBudget.format(requested)) more with \(MemoryBudget.format(held)) already held, "
                + "over the memory budget of \(MemoryBudget.format(budget)) (--max-memory or \(MemoryBudget.environmentVariable) raise it)"
        }
        return "cannot allocate \(MemoryBudget.format(requested)): the system refused (out of memory)"
    }
}

/// The live-bytes account of one budgeted scope.
///
/// `held` is what the interpreters keep (constants, inputs, each node's
/// results until their last reader); `pending` is what the node now running
/// has announced it will allocate (its output shapes, im2col buffers, index
/// maps) and is dropped once its results are counted in `held`. A request
/// passes when `held + pending + request ≤ budget`.
final class MemoryLedger: Sendable {
    @TaskLocal static var current: MemoryLedger?

    let budget: Int
    private struct Account { var held = 0, pending = 0 }
    private let account = Mutex(Account())

    init(budget: MemoryBudget) { self.budget = budget.bytes }

    /// Announces `bytes` the current node will allocate.
    func reserve(_ bytes: Int) throws(MemoryBudgetExceeded) {
        let result: MemoryBudgetExceeded? = account.withLock { a in
            let (total, overflow) = a.held.addingReportingOverflow(a.pending)
            let (after, overflow2) = total.addingReportingOverflow(bytes)
            if overflow || overflow2 || after > budget {
                return MemoryBudgetExceeded(requested: bytes, held: a.held + a.pending, budget: budget)
            }
            a.pending = after - a.held
            return nil
        }
        if let result { throw result }
        try MemoryLedger.probe(bytes)
    }

    /// Moves from pending to held: the node finished with results of `bytes`.
    func settle(holding bytes: Int) throws(MemoryBudgetExceeded) {
        let result: MemoryBudgetExceeded? = account.withLock { a in
            a.pending = 0
            a.held += bytes
            return a.held > budget ? MemoryBudgetExceeded(requested: bytes, held: a.held - bytes, budget: budget) : nil
        }
        if let result { throw result }
    }

    /// Tensors of `bytes` were released.
    func release(_ bytes: Int) {
        account.withLock { a in a.held = max(0, a.held - bytes); a.pending = 0 }
    }

    var held: Int { account.withLock { $0.held } }

    /// Large blocks are asked of the allocator before the runtime commits to
    /// them, so that a refusal (RLIMIT_AS, a cgroup, no overcommit) is an
    /// error here instead of the abort Swift's arrays give.
    static let probeThreshold = 64 << 20

    static func probe(_ bytes: Int) throws(MemoryBudgetExceeded) {
        guard bytes >= probeThreshold else { return }
        guard let p = malloc(bytes) else { throw MemoryBudgetExceeded(requested: bytes, held: 0, budget: nil) }
        free(p)
    }
}

extension RuntimeTensor {
    /// Bytes this tensor's storage occupies.
    public var storageBytes: Int {
        switch storage {
        case .float(let v): v.count * MemoryLayout<Float>.stride
        case .double(let v): v.count * MemoryLayout<Double>.stride
        case .int(let v): v.count * MemoryLayout<Int64>.stride
        }
    }

    /// Weighs a tensor of `count` elements that a caller outside the
    /// runtime is about to build (random inputs) against the budget of the
    /// ``MemoryBudget/measured(_:)`` scope it runs in; `bytesPerElement`
    /// counts the caller's temporaries too.
    package static func reserve(count: Int, bytesPerElement: Int) throws {
        try reserveBytes(count: count, bytesPerElement: bytesPerElement)
    }

    /// Counts tensors made outside any node (inputs) as held.
    package static func hold(_ tensors: some Sequence<RuntimeTensor>) throws {
        try MemoryLedger.current?.settle(holding: tensors.reduce(0) { $0 + $1.storageBytes })
    }

    /// Tensors a caller held (a run's outputs, inputs) are gone.
    package static func release(_ tensors: some Sequence<RuntimeTensor>) {
        MemoryLedger.current?.release(tensors.reduce(0) { $0 + $1.storageBytes })
    }
}

/// Weighs `count` elements of `bytesPerElement` against the budget in force.
func reserveBytes(count: Int, bytesPerElement: Int) throws {
    guard let ledger = MemoryLedger.current else { return }
    let (bytes, overflow) = count.multipliedReportingOverflow(by: bytesPerElement)
    try ledger.reserve(overflow ? Int.max : bytes)
}

/// The element count of a tensor a kernel is about to allocate: checked as
/// ``checkedCount(_:)`` is and weighed against the memory budget, at
/// `bytesPerElement` (8, the widest storage, unless the caller knows better;
/// gathers that build an index map first pass 16).
func allocationCount(_ shape: [Int], bytesPerElement: Int = 8) throws -> Int {
    let count = try checkedCount(shape)
    try reserveBytes(count: count, bytesPerElement: bytesPerElement)
    return count
}
