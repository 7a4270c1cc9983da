import FileIO
import Foundation
import Synchronization
import WebhookModel
#if canImport(Glibc)
import Glibc
#endif

/// The directory reports go to. Every file is written under a temporary name
/// in the same directory and renamed into place, so a reader (or a crash)
/// never sees half a report; `sync()` makes the whole run durable at once
/// before the run is recorded. `write` may be called from several threads at once.
public final class ReportDirectory: Sendable {
    public let path: String
    private let fd: Int32
    /// Numbers temporary names; writers on several threads share it.
    private let counter = Atomic<Int>(0)
    private static let temporaryPrefix = ".task_report.tmp-"

    /// Creates the directory if it is missing and checks that files can be made in it.
    public init(path: String) throws {
        self.path = path
        do {
            try FileManager.default.createDirectory(atPath: path, withIntermediateDirectories: true)
        } catch {
            throw SystemCallError(operation: "cannot create the report directory", path: path, errno: (error as NSError).code == 0 ? EACCES : Int32((error as NSError).code))
        }
        let fd = open(path, O_RDONLY | O_DIRECTORY | O_CLOEXEC)
        guard fd >= 0 else { throw SystemCallError(operation: "cannot open the report directory", path: path, errno: errno) }
        self.fd = fd
        guard faccessat(fd, ".", W_OK, AT_EACCESS) == 0 else {
            let e = errno
            close(fd)
            throw SystemCallError(operation: "the report directory is not writable", path: path, errno: e)
        }
    }

    deinit { close(fd) }

    /// Removes temporary files a killed run left behind. Call while holding the run lock.
    public func removeLeftovers() {
        forEachRegularFile { name in
            if name.hasPrefix(Self.temporaryPrefix) { unlinkat(fd, name, 0) }
        }
    }

    /// What `removeExpired` did.
    public struct Pruning: Sendable {
        public var removed = 0
        /// Expired files that could not be removed, and the first error.
        public var failed = 0
        public var firstError: SystemCallError?
    }

    /// Removes the report and manifest files whose window ended before
    /// `cutoff`: only names this program writes (`ReportFileName.window(of:)`),
    /// only regular files; anything else in the directory is left alone.
    /// Streams the directory, so its size costs no memory.
    public func removeExpired(endingBefore cutoff: Timestamp) -> Pruning {
        var result = Pruning()
        forEachRegularFile { name in
            guard let window = ReportFileName.window(of: name), window.end < cutoff else { return }
            if unlinkat(fd, name, 0) == 0 || errno == ENOENT {
                result.removed += 1
            } else {
                result.failed += 1
                if result.firstError == nil { result.firstError = SystemCallError(operation: "cannot remove \(name) from", path: path, errno: errno) }
            }
        }
        return result
    }

    /// Calls `body` with the name of every regular file in the directory, one
    /// entry at a time (readdir), never holding the whole listing.
    private func forEachRegularFile(_ body: (String) -> Void) {
        let copy = dup(fd)
        guard copy >= 0, let stream = fdopendir(copy) else {
            if copy >= 0 { close(copy) }
            return
        }
        defer { closedir(stream) }
        rewinddir(stream)
        while let entry = readdir(stream) {
            let type = entry.pointee.d_type
            let name = withUnsafePointer(to: &entry.pointee.d_name) {
                String(cString: UnsafeRawPointer($0).assumingMemoryBound(to: CChar.self))
            }
            if type == UInt8(DT_REG) {
                body(name)
            } else if type == UInt8(DT_UNKNOWN) {
                var info = stat()
                if fstatat(fd, name, &info, AT_SYMLINK_NOFOLLOW) == 0, info.st_mode & S_IFMT == S_IFREG { body(name) }
            }
        }
    }

    /// Writes `bytes` as `name` atomically (temporary file, then rename).
    public func write(name: String, bytes: [UInt8]) throws {
        precondition(!name.utf8.contains(UInt8(ascii: "/")) && name != "." && name != "..", "report names never hold a path")
        let number = counter.wrappingAdd(1, ordering: .relaxed).newValue
        let temporary = "\(Self.temporaryPrefix)\(getpid())-\(number).json"
        let file = openat(fd, temporary, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC | O_NOFOLLOW, 0o644)
        guard file >= 0 else { throw SystemCallError(operation: "cannot create a file in", path: path, errno: errno) }
        var failure = bytes.withUnsafeBytes { writeFully(file, $0) }
        if close(file) != 0 && failure == 0 { failure = errno }
        if failure == 0 && renameat(fd, temporary, fd, name) != 0 { failure = errno }
        if failure != 0 {
            unlinkat(fd, temporary, 0)
            throw SystemCallError(operation: "cannot write \(name) in", path: path, errno: failure)
        }
    }

    /// The bytes of `name`, or nil when there is no such regular file (or it cannot be read).
    public func read(name: String) -> [UInt8]? {
        precondition(!name.utf8.contains(UInt8(ascii: "/")), "report names never hold a path")
        let file = openat(fd, name, O_RDONLY | O_CLOEXEC | O_NOFOLLOW)
        guard file >= 0 else { return nil }
        defer { close(file) }
        var info = stat()
        guard fstat(file, &info) == 0, info.st_mode & S_IFMT == S_IFREG else { return nil }
        var bytes: [UInt8] = []
        var chunk = [UInt8](repeating: 0, count: 64 << 10)
        while true {
            let count = chunk.withUnsafeMutableBytes { Glibc.read(file, $0.baseAddress, $0.count) }
            if count < 0 && errno == EINTR { continue }
            guard count >= 0 else { return nil }
            if count == 0 { return bytes }
            bytes.append(contentsOf: chunk[0..<count])
        }
    }

    /// Makes every file written so far, and their names, durable.
    public func sync() throws {
        let failure = syncFileSystem(fd)
        guard failure == 0, fsync(fd) == 0 else {
            throw SystemCallError(operation: "cannot sync", path: path, errno: failure != 0 ? failure : errno)
        }
    }
}
