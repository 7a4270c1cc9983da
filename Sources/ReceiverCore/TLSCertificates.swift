import HummingbirdCore
import Logging
import NIOCore
import NIOSSL
import ServiceLifecycle
import Synchronization
import UnixSignals

/// The receiver's certificate and key (PEM files), loaded at start-up and
/// again on SIGHUP (the certbot-renew habit). New connections get whatever
/// is current; connections already open keep the context they started with,
/// so a reload never drops one. A reload that fails keeps the old pair.
public final class TLSCertificates: Sendable {
    /// Why a certificate or key cannot be used; names the file.
    public struct LoadError: Error, CustomStringConvertible {
        public var description: String
    }

    public let certificateFile: String
    public let keyFile: String
    private let current: Mutex<NIOSSLContext>

    public init(certificateFile: String, keyFile: String) throws {
        self.certificateFile = certificateFile
        self.keyFile = keyFile
        current = Mutex(try Self.load(certificateFile: certificateFile, keyFile: keyFile))
    }

    /// The context a new connection is set up with.
    public var context: NIOSSLContext { current.withLock { $0 } }

    /// Reads both files again and swaps them in; throws (keeping the old pair) when they are unusable.
    public func reload() throws {
        let fresh = try Self.load(certificateFile: certificateFile, keyFile: keyFile)
        current.withLock { $0 = fresh }
    }

    static func load(certificateFile: String, keyFile: String) throws -> NIOSSLContext {
        let chain: [NIOSSLCertificate]
        do {
            chain = try NIOSSLCertificate.fromPEMFile(certificateFile)
        } catch {
            throw LoadError(description: "TLS_CERT_FILE \(certificateFile) cannot be read as a PEM certificate: \(error)")
        }
        guard !chain.isEmpty else { throw LoadError(description: "TLS_CERT_FILE \(certificateFile) holds no PEM certificate") }
        let key: NIOSSLPrivateKey
        do {
            key = try NIOSSLPrivateKey(file: keyFile, format: .pem)
        } catch {
            throw LoadError(description: "TLS_KEY_FILE \(keyFile) cannot be read as a PEM private key: \(error)")
        }
        let configuration = TLSConfiguration.makeServerConfiguration(
            certificateChain: chain.map { .certificate($0) }, privateKey: .privateKey(key))
        do {
            return try NIOSSLContext(configuration: configuration)
        } catch {
            // BoringSSL refuses a key that is not the certificate's here.
            throw LoadError(description: "TLS_KEY_FILE \(keyFile) is not the private key of the certificate in TLS_CERT_FILE \(certificateFile) (or they cannot be used: \(error))")
        }
    }
}

/// A server child channel that puts TLS in front of `Base` with the context
/// current when the connection opens (HummingbirdTLS's `TLSChannel` fixes its
/// context once, so it cannot reload).
struct ReloadingTLSChannel<Base: ServerChildChannel>: ServerChildChannel {
    typealias Value = Base.Value
    let base: Base
    let certificates: TLSCertificates

    func setup(channel: any Channel, logger: Logger) -> EventLoopFuture<Value> {
        channel.eventLoop.makeCompletedFuture {
            try channel.pipeline.syncOperations.addHandler(NIOSSLServerHandler(context: certificates.context))
        }.flatMap {
            base.setup(channel: channel, logger: logger)
        }
    }

    func handle(value: Value, logger: Logger) async {
        await base.handle(value: value, logger: logger)
    }
}

/// Re-reads the certificate and key on every SIGHUP while the receiver runs.
/// Without TLS, SIGHUP is only logged (it would otherwise end the process).
struct CertificateReloader: Service {
    let certificates: TLSCertificates?
    let logger: Logger

    func run() async throws {
        let signals = await UnixSignalsSequence(trapping: .sighup)
        for await _ in signals.cancelOnGracefulShutdown() {
            guard let certificates else {
                logger.notice("SIGHUP: no TLS certificate to reload")
                continue
            }
            do {
                try certificates.reload()
                logger.notice("SIGHUP: TLS certificate and key reloaded; new connections use them",
                              metadata: ["certificate": "\(certificates.certificateFile)"])
            } catch {
                logger.error("SIGHUP: keeping the previous TLS certificate", metadata: ["error": "\(error)"])
            }
        }
    }
}
