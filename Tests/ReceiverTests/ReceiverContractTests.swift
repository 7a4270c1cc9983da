import Foundation
import Testing
import TestSupport

/// `docs/openapi.yaml` is the receiver's published HTTP contract: a valid
/// OpenAPI 3.1 document, and one the built receiver keeps, as schemathesis
/// (an outside tool, generating requests from the document) checks it.
@Suite struct ReceiverContractTests {
    let document = packageRoot() + "/docs/openapi.yaml"

    @Test func theDocumentIsValidOpenAPI() throws {
        let validator = try runTool(try systemTool("openapi-spec-validator", package: "PyPI's openapi-spec-validator"), [document])
        #expect(validator.status == 0, "\(validator.all)")
        #expect(validator.output.contains("OK"), "\(validator.all)")
    }

    /// No server error, every status, content type, header and body as the
    /// document says; schema-violating requests refused; methods it does not
    /// list answered 405 with an `Allow` naming those it does. Run with and
    /// without `WEBHOOK_SECRET` (then every unsigned delivery is a documented 401).
    @Test(arguments: [false, true]) func theReceiverKeepsIt(signed: Bool) throws {
        let environment = signed ? ["WEBHOOK_SECRET": "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"] : [:]
        let receiver = try RunningReceiver(environment: environment, stdout: .null)
        defer { receiver.process.signal(SIGTERM); _ = try? receiver.process.waitForExit() }
        let workspace = try makeTemporaryDirectory("schemathesis")
        let checks = [
            "not_a_server_error", "status_code_conformance", "content_type_conformance", "response_headers_conformance",
            "response_schema_conformance", "negative_data_rejection", "unsupported_method", "allow_header_conformance",
        ]
        // In a directory of its own: nothing it writes lands in the repository.
        let run = try runTool("/usr/bin/env", [
            "-C", workspace, try systemTool("schemathesis", package: "PyPI's schemathesis"), "run", document,
            "--url", "http://127.0.0.1:\(receiver.port)", "--checks", checks.joined(separator: ","),
            "--max-examples", "150", "--workers", "2", "--seed", "20261129", "--generation-database", "none", "--no-color",
        ], timeout: 300)
        #expect(run.status == 0, "\(run.all)")
        #expect(run.output.range(of: #"([0-9]+) generated, \1 passed"#, options: .regularExpression) != nil, "every case passed: \(run.all)")
        #expect(run.output.contains("Tested: 5"), "every operation of the document was exercised: \(run.all)")
        #expect(receiver.process.isRunning, "the receiver is still up: \(receiver.stderr)")
    }
}
