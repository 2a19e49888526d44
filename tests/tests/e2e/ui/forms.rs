mod admin;
mod operations;
