/// The receiver could not listen where it was told to.
public struct ListenError: Error, CustomStringConvertible {
    public var address: String
    public var reason: String
    public var description: String { "cannot listen on \(address): \(reason)" }
}
