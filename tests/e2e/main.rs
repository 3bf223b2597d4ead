//! End-to-end tests of the whole suite: real gRPC over TCP on 127.0.0.1 port 0, real databases
//! (SQLite files, or PostgreSQL when `SPORTELLO_TEST_DATABASE_URL` is set), real processes where
//! the test is about processes.

mod accepted_values;
mod auth;
mod backup;
mod benefits;
mod claims;
mod click_day;
mod cns;
mod collector;
mod contact_center;
mod conversion;
mod conversion_trust;
mod deadlines;
mod delivery;
mod error_details;
mod gateway_contract;
mod gateway_overload;
mod health;
mod helpers;
mod hostile_input;
mod imports;
mod instances;
mod metrics;
mod my_data;
mod notify;
mod notify_crash;
mod notify_delivery;
mod operator;
mod outbox;
mod pin_lifecycle;
mod pin_request;
mod reflection;
mod residents;
mod secrets_at_rest;
mod staff;
mod supervisor;
mod tracing_across_services;
mod trust;
mod watch;
