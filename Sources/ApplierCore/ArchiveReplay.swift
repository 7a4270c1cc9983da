import ArchiveSegments
import FileIO
import Foundation
import Logging
#if canImport(Glibc)
import Glibc
#endif

/// `applier --replay-archive`: every pending segment of the receiver's
/// archive applied, oldest first, and each one verified (moved to
/// `applied/`) only once all its lines were read to the end and committed;
/// then verified segments past the retention period deleted. What pipeline.sh
/// runs before the receiver starts (with `sealCurrent`: the live file first
/// becomes a segment) and, while it runs, to verify the rotated segments.
///
/// A segment whose replay fails or is stopped stays pending, so the next
/// replay applies it again: replaying is duplicates only.
public struct ArchiveReplay {
    public let segments: ArchiveSegments
    public let retentionDays: Int
    public let sealCurrent: Bool

    public init(archivePath: String, retentionDays: Int, sealCurrent: Bool) {
        self.segments = ArchiveSegments(path: archivePath)
        self.retentionDays = retentionDays
        self.sealCurrent = sealCurrent
    }

    /// What became of a replay.
    public struct Result: Sendable {
        public var verified: [String] = []
        public var pruned: [String] = []
        /// Set when a segment could not be applied to its end; the rest were not tried.
        public var stoppedAt: (segment: String, outcome: Applier.Outcome)?
    }

    /// `makeApplier(fd)` reads one segment from `fd` (the real applier, or a test's).
    public func run(logger: Logger, makeApplier: (Int32) throws -> Applier) throws -> Result {
        var result = Result()
        if sealCurrent, let sealed = try segments.seal() {
            logger.info("archive: the current file is now a segment", metadata: ["segment": "\(sealed)"])
        }
        let pending = try segments.pending()
        if !pending.isEmpty {
            logger.notice("archive: replaying \(pending.count) segment(s) not yet verified", metadata: ["archive": "\(segments.path)"])
        }
        for segment in pending {
            let fd = open(segment.path, O_RDONLY | O_CLOEXEC)
            guard fd >= 0 else { throw SystemCallError(operation: "open", path: segment.path, errno: errno) }
            defer { close(fd) }
            let applier = try makeApplier(fd)
            let outcome = applier.run()
            guard case .done = outcome, applier.readToEnd else {
                result.stoppedAt = (segment.path, outcome)
                logger.error("archive: \(segment) was not applied to its end; it stays pending for the next replay")
                return result
            }
            try segments.markVerified(segment)
            result.verified.append(segment.path)
            logger.info("archive: verified", metadata: ["segment": "\(segment)", "lines": "\(applier.summary.read)"])
        }
        result.pruned = try segments.prune(retentionDays: retentionDays).map(\.path)
        if !result.pruned.isEmpty {
            logger.info("archive: deleted \(result.pruned.count) verified segment(s) older than \(retentionDays) days")
        }
        return result
    }
}
