//! The `pinch` crate's integration tests, one binary (issue 16): a change
//! links once, not once per file. Each module is one former `tests/<name>.rs`,
//! so nextest filters read `binary(it) & test(/^a2a::/)`.

// Tests run the pinch binary and the tools around it directly, as a user
// would; the product's rule (clippy.toml: programs start through
// pinch_sandbox::command::new) is for the product, not its tests.
#![allow(clippy::disallowed_methods)]

mod common;

mod a2a;
mod admin;
mod architecture;
mod boot;
mod central_db;
mod channels;
mod chaos;
mod chat_faults;
mod cli_engine;
mod compaction;
mod continuation;
mod discord;
mod disk_quota;
mod docker;
mod doctor;
mod e2e;
mod egress;
mod email;
mod faults;
mod forged_rows;
mod fuse_torn_view;
mod local_model;
mod matrix;
mod mcp;
mod memory;
mod metrics;
mod module_shape;
mod mount_attacks;
mod outbox_race;
mod permissions;
mod private_data;
mod provider_faults;
mod proxy;
mod proxy_attacks;
mod reliability;
mod sandbox_security;
mod scheduling;
mod secrets;
mod self_mod;
mod service;
mod session_db;
mod settings;
mod signal;
mod slack;
mod streaming;
mod supervision;
mod telegram;
mod terminal;
mod tools;
mod vision;
mod voice;
mod web_chat;
mod web_fetch;
mod webhook;
mod whatsapp;
mod whatsapp_web;
