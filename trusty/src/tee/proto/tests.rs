//! Codec tests: round trips, the documented layout, hostile bodies.

use super::*;

fn body(frame: &[u8]) -> &[u8] {
    let len = u32::from_le_bytes([frame[0], frame[1], frame[2], frame[3]]) as usize;
    assert_eq!(len, frame.len() - 4);
    &frame[4..]
}

fn all_params() -> [Param; NUM_PARAMS] {
    [
        Param::ValueInput(Value { a: 1, b: 2, c: 3 }),
        Param::MemrefInput(b"hello".to_vec()),
        Param::MemrefOutput { capacity: 4096 },
        Param::MemrefInout(vec![7; 3]),
    ]
}

#[test]
fn requests_round_trip() {
    let reqs = [
        Request::Hello { version: 1 },
        Request::OpenSession {
            uuid: [0xab; 16],
            login: login::USER,
            client: [3; 16],
            cancel_id: 9,
            params: Default::default(),
        },
        Request::Invoke {
            session: 5,
            func: 0,
            cancel_id: 77,
            params: all_params(),
        },
        Request::Invoke {
            session: 5,
            func: 1,
            cancel_id: 0,
            params: [
                Param::ValueOutput,
                Param::ValueInout(Value {
                    a: u64::MAX,
                    b: 0,
                    c: 1,
                }),
                Param::None,
                Param::None,
            ],
        },
        Request::Cancel {
            session: 5,
            cancel_id: 77,
        },
        Request::CloseSession { session: 5 },
    ];
    for (i, req) in reqs.iter().enumerate() {
        let f = req.encode_frame(i as u64 + 100);
        assert_eq!(Request::decode(body(&f)), Ok((i as u64 + 100, req.clone())));
    }
}

#[test]
fn open_session_layout_matches_the_spec() {
    let f = Request::OpenSession {
        uuid: [0x11; 16],
        login: 4,
        client: [0x22; 16],
        cancel_id: 0x33,
        params: Default::default(),
    }
    .encode_frame(0x0102030405060708);
    let b = body(&f);
    assert_eq!(&b[..4], &1u32.to_le_bytes());
    assert_eq!(&b[4..12], &0x0102030405060708u64.to_le_bytes());
    assert_eq!(&b[12..28], &[0x11; 16]);
    assert_eq!(&b[28..32], &4u32.to_le_bytes());
    assert_eq!(&b[32..48], &[0x22; 16]);
    assert_eq!(&b[48..52], &0x33u32.to_le_bytes());
    assert_eq!(&b[52..], &[0, 0, 0, 0]);
}

#[test]
fn responses_round_trip() {
    let resps = [
        Response::error(1, op::HELLO, result::SUCCESS, origin::TEE, None),
        Response {
            id: 2,
            ret: result::SUCCESS,
            origin: origin::TRUSTED_APP,
            body: ResponseBody::OpenSession {
                session: 3,
                params: Default::default(),
            },
        },
        Response {
            id: 3,
            ret: result::SHORT_BUFFER,
            origin: origin::TRUSTED_APP,
            body: ResponseBody::Invoke {
                params: [
                    ParamOut::ValueInput,
                    ParamOut::MemrefInput,
                    ParamOut::MemrefOutput {
                        size: 10,
                        data: vec![1, 2, 3],
                    },
                    ParamOut::MemrefInout {
                        size: 0,
                        data: vec![],
                    },
                ],
            },
        },
        Response::error(4, op::CANCEL, result::SUCCESS, origin::TEE, None),
        Response::error(
            5,
            op::CLOSE_SESSION,
            result::ITEM_NOT_FOUND,
            origin::TEE,
            None,
        ),
        Response::error(
            6,
            op::INVOKE,
            result::BUSY,
            origin::TEE,
            Some(&all_params()),
        ),
    ];
    for r in resps {
        let f = r.encode_frame();
        assert_eq!(Response::decode(body(&f)), Ok(r));
    }
}

#[test]
fn hostile_bodies_are_errors() {
    let good = Request::Invoke {
        session: 1,
        func: 0,
        cancel_id: 0,
        params: all_params(),
    }
    .encode_frame(1);
    let b = body(&good);
    for cut in 0..b.len() {
        assert!(Request::decode(&b[..cut]).is_err(), "cut at {cut}");
    }
    let mut trailing = b.to_vec();
    trailing.push(0);
    assert_eq!(Request::decode(&trailing), Err(ProtoError::Trailing(1)));
    // A memref length beyond the limit is refused before any copy.
    let mut huge = Vec::new();
    huge.extend_from_slice(&op::INVOKE.to_le_bytes());
    huge.extend_from_slice(&0u64.to_le_bytes());
    huge.extend_from_slice(&[0; 12]);
    huge.push(param_type::MEMREF_INPUT);
    huge.extend_from_slice(&u32::MAX.to_le_bytes());
    assert_eq!(
        Request::decode(&huge),
        Err(ProtoError::MemrefTooLong(u32::MAX as usize))
    );
    let mut bad_type = huge[..24].to_vec();
    bad_type.push(4);
    assert_eq!(
        Request::decode(&bad_type),
        Err(ProtoError::UnknownParamType(4))
    );
    let mut unknown = Vec::new();
    unknown.extend_from_slice(&9u32.to_le_bytes());
    unknown.extend_from_slice(&0u64.to_le_bytes());
    assert_eq!(Request::decode(&unknown), Err(ProtoError::UnknownOp(9)));
    // A response body is not a request.
    let resp = Response::error(1, op::CANCEL, 0, 3, None).encode_frame();
    assert!(matches!(
        Request::decode(body(&resp)),
        Err(ProtoError::WrongDirection(_))
    ));
}

#[test]
fn response_data_cannot_exceed_its_size() {
    let r = Response {
        id: 1,
        ret: 0,
        origin: 4,
        body: ResponseBody::Invoke {
            params: [
                ParamOut::MemrefOutput {
                    size: 2,
                    data: vec![1, 2, 3],
                },
                ParamOut::None,
                ParamOut::None,
                ParamOut::None,
            ],
        },
    };
    let f = r.encode_frame();
    assert_eq!(
        Response::decode(body(&f)),
        Err(ProtoError::DataOverSize { data: 3, size: 2 })
    );
}
