//! What a client sends before it is authenticated: SASL/PLAIN messages, SCRAM client-first and
//! client-final messages (separated by a NUL byte here), and client certificates (DER): parsing
//! never panics, and a SCRAM exchange driven by arbitrary bytes never logs anyone in.
#![no_main]

use libfuzzer_sys::fuzz_target;
use weir_broker::security::scram::{Credential, Mechanism, ScramServer, Step, parse_plain};

fuzz_target!(|data: &[u8]| {
    let _ = parse_plain(data);
    let _ = weir_broker::security::certificate_principal(data);
    let mut parts = data.splitn(2, |b| *b == 0);
    let (first, last) = (parts.next().unwrap_or_default(), parts.next());
    for mechanism in Mechanism::ALL {
        // A fixed salted password: no PBKDF2 per run.
        let stored = Credential::from_salted_password(mechanism, b"salt".to_vec(), 4096, b"salted");
        let mut server = ScramServer::new(mechanism);
        let Ok(Step::Challenge(_)) = server.step(first, |_| Some(stored.clone())) else {
            continue;
        };
        if let Some(last) = last {
            // The server's nonce is fresh and random: arbitrary bytes cannot complete a login.
            assert!(server.step(last, |_| None).is_err());
        }
    }
});
