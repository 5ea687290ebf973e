//! The `pinch` crate's integration tests, one binary (issue 16): a change
//! links once, not once per file. Each module is one former `tests/<name>.rs`,
//! so nextest filters read `binary(it) & test(/^a2a::/)`.

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
mod faults;
mod forged_rows;
mod fuse_torn_view;
mod local_model;
mod mcp;
mod metrics;
mod mount_attacks;
mod outbox_race;
mod permissions;
mod private_data;
mod proxy;
mod proxy_attacks;
mod reliability;
mod sandbox_security;
mod scheduling;
mod self_mod;
mod service;
mod session_db;
mod settings;
mod slack;
mod supervision;
mod telegram;
mod tools;
mod web_chat;
mod webhook;
