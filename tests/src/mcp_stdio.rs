//! An MCP client of a `memgate` process over its stdin and stdout, one JSON-RPC message per
//! line, as clients that launch their memory server do.

use std::io::{BufRead, BufReader, Write};
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};

use serde_json::{json, Value};

pub struct McpStdioClient {
    child: Child,
    input: ChildStdin,
    output: BufReader<ChildStdout>,
    next_id: u64,
}

impl McpStdioClient {
    /// Launches `command` (stderr discarded) and initializes a session.
    pub fn launch(mut command: Command) -> anyhow::Result<Self> {
        let mut child = command
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()?;
        let input = child.stdin.take().ok_or_else(|| anyhow::anyhow!("stdin"))?;
        let output = BufReader::new(
            child
                .stdout
                .take()
                .ok_or_else(|| anyhow::anyhow!("stdout"))?,
        );
        let mut client = Self {
            child,
            input,
            output,
            next_id: 0,
        };
        client.initialize()?;
        Ok(client)
    }

    /// The session's `initialize` answer's `serverInfo`.
    fn initialize(&mut self) -> anyhow::Result<Value> {
        let answer = self.request(
            "initialize",
            json!({"protocolVersion": "2025-06-18", "capabilities": {}, "clientInfo": {"name": "test", "version": "1"}}),
        )?;
        self.send(&json!({"jsonrpc": "2.0", "method": "notifications/initialized"}))?;
        Ok(answer["result"]["serverInfo"].clone())
    }

    fn send(&mut self, message: &Value) -> anyhow::Result<()> {
        writeln!(self.input, "{message}")?;
        self.input.flush()?;
        Ok(())
    }

    /// Sends a request and reads the next line as its answer.
    pub fn request(&mut self, method: &str, params: Value) -> anyhow::Result<Value> {
        self.next_id += 1;
        self.send(
            &json!({"jsonrpc": "2.0", "id": self.next_id, "method": method, "params": params}),
        )?;
        let mut line = String::new();
        if self.output.read_line(&mut line)? == 0 {
            anyhow::bail!("the server closed its stdout");
        }
        Ok(serde_json::from_str(&line)?)
    }

    /// A tool's first text result.
    pub fn tool(&mut self, name: &str, arguments: Value) -> anyhow::Result<String> {
        let answer = self.request("tools/call", json!({"name": name, "arguments": arguments}))?;
        answer["result"]["content"][0]["text"]
            .as_str()
            .map(str::to_string)
            .ok_or_else(|| anyhow::anyhow!("not a text result: {answer}"))
    }

    /// Closes stdin and waits for the process to exit.
    pub fn close(mut self) -> anyhow::Result<std::process::ExitStatus> {
        drop(self.input);
        Ok(self.child.wait()?)
    }
}
