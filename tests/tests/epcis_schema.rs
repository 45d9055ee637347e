//! The EPCIS 2.0 JSON Schema check itself: GS1's examples pass, a minimal document of the shape a
//! vaccine shipment export will take passes, and documents broken in ways the schema forbids fail,
//! each at the JSON pointer of the broken value.
#![allow(clippy::unwrap_used)]

use serde_json::{Value, json};
use vaxtrace_tests::epcis::{example, validate};

const EXAMPLES: [&str; 3] =
    ["example-ObjectEvent.jsonld", "example-ObjectEvent-DigitalLink.jsonld", "example-SensorData.jsonld"];

/// GS1's plain ObjectEvent example, changed by `f` on its first event.
fn mutated_event(f: impl FnOnce(&mut serde_json::Map<String, Value>)) -> Value {
    let mut doc = example("example-ObjectEvent.jsonld");
    f(doc["epcisBody"]["eventList"][0].as_object_mut().unwrap());
    doc
}

/// Asserts that `doc` is rejected with an error at `pointer` whose message contains `needle`.
#[track_caller]
fn assert_rejected(doc: &Value, pointer: &str, needle: &str) {
    let errors = validate(doc).expect_err("the schema should reject this document");
    let prefix = format!("{pointer}: ");
    assert!(
        errors.iter().any(|e| e.starts_with(&prefix) && e.contains(needle)),
        "no error at {pointer} mentioning {needle:?}; got: {errors:#?}"
    );
}

#[test]
fn gs1_examples_validate() {
    for file in EXAMPLES {
        if let Err(errors) = validate(&example(file)) {
            panic!("{file} should validate, got: {errors:#?}");
        }
    }
}

#[test]
fn minimal_vaccine_shipment_document_validates() {
    let doc = json!({
        "@context": ["https://ref.gs1.org/standards/epcis/2.0.0/epcis-context.jsonld"],
        "type": "EPCISDocument",
        "schemaVersion": "2.0",
        "creationDate": "2025-01-15T10:00:00Z",
        "epcisBody": {"eventList": [
            {
                "type": "ObjectEvent",
                "eventID": "urn:uuid:0193a8b2-7c4e-7a51-9d2e-3f6b1c0d4e5f",
                "eventTime": "2025-01-15T09:30:00.000+05:30",
                "eventTimeZoneOffset": "+05:30",
                "action": "OBSERVE",
                "bizStep": "shipping",
                "disposition": "in_transit",
                "quantityList": [
                    {"epcClass": "urn:epc:class:lgtin:4012345.012345.LOT42", "quantity": 200, "uom": "H87"}
                ],
                "readPoint": {"id": "urn:epc:id:sgln:4012345.00001.0"},
                "bizLocation": {"id": "urn:epc:id:sgln:4012345.00001.0"},
                "bizTransactionList": [{"type": "desadv", "bizTransaction": "urn:example:shipment:S-1"}],
                "sourceList": [{"type": "location", "source": "urn:epc:id:sgln:4012345.00001.0"}],
                "destinationList": [{"type": "location", "destination": "urn:epc:id:sgln:4012345.00002.0"}],
                "sensorElementList": [{
                    "sensorMetadata": {
                        "startTime": "2025-01-15T08:00:00Z",
                        "endTime": "2025-01-15T09:30:00Z",
                        "deviceID": "urn:example:logger:L-7"
                    },
                    "sensorReport": [
                        {"type": "Temperature", "minValue": 2.5, "maxValue": 7.9, "meanValue": 5.1, "uom": "CEL"},
                        {"type": "gs1:MT-Temperature", "value": 4.0, "uom": "CEL"}
                    ]
                }]
            },
            {
                "type": "ObjectEvent",
                "eventTime": "2025-01-16T11:00:00Z",
                "eventTimeZoneOffset": "+00:00",
                "action": "OBSERVE",
                "bizStep": "receiving",
                "disposition": "in_progress",
                "quantityList": [{"epcClass": "urn:epc:class:lgtin:4012345.012345.LOT42", "quantity": 200}],
                "readPoint": {"id": "urn:epc:id:sgln:4012345.00002.0"}
            }
        ]}
    });
    if let Err(errors) = validate(&doc) {
        panic!("minimal document should validate, got: {errors:#?}");
    }
}

#[test]
fn object_event_without_action_is_rejected() {
    let doc = mutated_event(|e| {
        e.remove("action");
    });
    assert_rejected(&doc, "/epcisBody/eventList/0", "\"action\" is a required property");
}

#[test]
fn unknown_action_is_rejected() {
    let doc = mutated_event(|e| {
        e.insert("action".into(), json!("WRONG"));
    });
    assert_rejected(&doc, "/epcisBody/eventList/0/action", "\"WRONG\" is not one of");
}

#[test]
fn event_time_must_be_a_date_time_string() {
    // `format: date-time` is asserted...
    let doc = mutated_event(|e| {
        e.insert("eventTime".into(), json!("yesterday"));
    });
    assert_rejected(&doc, "/epcisBody/eventList/0/eventTime", "is not a \"date-time\"");
    let doc = mutated_event(|e| {
        e.insert("eventTime".into(), json!("2005-04-03"));
    });
    assert_rejected(&doc, "/epcisBody/eventList/0/eventTime", "is not a \"date-time\"");
    // ...and `type: string` rejects it structurally too.
    let doc = mutated_event(|e| {
        e.insert("eventTime".into(), json!(1_112_582_011));
    });
    assert_rejected(&doc, "/epcisBody/eventList/0/eventTime", "is not of type \"string\"");
    // An event without eventTime at all.
    let doc = mutated_event(|e| {
        e.remove("eventTime");
    });
    assert_rejected(&doc, "/epcisBody/eventList/0", "\"eventTime\" is a required property");
}

#[test]
fn document_without_epcis_body_is_rejected() {
    let mut doc = example("example-ObjectEvent.jsonld");
    doc.as_object_mut().unwrap().remove("epcisBody");
    assert_eq!(doc["type"], "EPCISDocument");
    assert_rejected(&doc, "(root)", "\"epcisBody\" is a required property");
}

#[test]
fn non_numeric_quantity_is_rejected() {
    let doc = mutated_event(|e| {
        e.insert(
            "quantityList".into(),
            json!([{"epcClass": "urn:epc:class:lgtin:4012345.012345.998877", "quantity": "200", "uom": "H87"}]),
        );
    });
    assert_rejected(&doc, "/epcisBody/eventList/0/quantityList/0/quantity", "is not of type \"number\"");
}

#[test]
fn other_schema_constraints_are_enforced() {
    // Time zone offsets run from -14:00 to +14:00.
    let doc = mutated_event(|e| {
        e.insert("eventTimeZoneOffset".into(), json!("+15:00"));
    });
    assert_rejected(&doc, "/epcisBody/eventList/0/eventTimeZoneOffset", "does not match");
    // CBV values are bare words: the CBV URN form is refused.
    let doc = mutated_event(|e| {
        e.insert("bizStep".into(), json!("urn:epcglobal:cbv:bizstep:shipping"));
    });
    assert_rejected(&doc, "/epcisBody/eventList/0/bizStep", "anyOf");
    // readPoint is an object {"id": uri}.
    let doc = mutated_event(|e| {
        e.insert("readPoint".into(), json!("urn:epc:id:sgln:0614141.07346.1234"));
    });
    assert_rejected(&doc, "/epcisBody/eventList/0/readPoint", "is not of type \"object\"");
    // A quantity element needs its epcClass.
    let doc = mutated_event(|e| {
        e.insert("quantityList".into(), json!([{"quantity": 1}]));
    });
    assert_rejected(&doc, "/epcisBody/eventList/0/quantityList/0", "\"epcClass\" is a required property");
    // A misspelt field is neither a known one nor a URI-named extension.
    let doc = mutated_event(|e| {
        e.insert("evenTime".into(), json!("2005-04-03T20:33:31Z"));
    });
    assert_rejected(&doc, "/epcisBody/eventList/0", "anyOf");
    // Sensor measurement types are GS1 words or non-GS1 URIs.
    let mut doc = example("example-SensorData.jsonld");
    doc["epcisBody"]["eventList"][0]["sensorElementList"][0]["sensorReport"][0]["type"] = json!("Temp");
    assert_rejected(&doc, "/epcisBody/eventList/0/sensorElementList/0/sensorReport/0/type", "anyOf");
}

#[test]
fn non_documents_are_rejected_without_panicking() {
    for doc in [json!(null), json!(42), json!("EPCISDocument"), json!([]), json!({})] {
        assert!(validate(&doc).is_err(), "{doc} should be rejected");
    }
}
