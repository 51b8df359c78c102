/// A problem with a model file or its external data, as one line a user
/// can act on: the file, then what is wrong with it.
public struct ModelFileError: Error, CustomStringConvertible, Sendable {
    /// The file the problem is in (as the user named it).
    public let file: String
    /// What is wrong, e.g. "is truncated: …" or "tensor 'w': …".
    public let problem: String

    public init(file: String, _ problem: String) {
        self.file = file
        self.problem = problem
    }

    public var description: String { "\(file): \(problem)" }
}
