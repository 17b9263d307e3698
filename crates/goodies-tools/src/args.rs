//! Reading a tool's arguments: names checked against the catalog, JSON types checked per
//! argument, `null` read as "not given".

use inbetweenies_proto::JsonObject;
use serde_json::Value;

use crate::catalog::ToolSpec;
use crate::error::ToolError;

/// The arguments of one call, checked against the tool's declared parameters.
#[derive(Debug)]
pub(crate) struct Args<'a> {
    tool: &'static str,
    map: &'a JsonObject,
}

impl<'a> Args<'a> {
    /// Refuses any argument the tool does not declare.
    pub fn new(
        tool: &'static str,
        spec: &ToolSpec,
        map: &'a JsonObject,
    ) -> Result<Self, ToolError> {
        let declared = spec.parameters["properties"].as_object();
        if let Some(extra) = map
            .keys()
            .find(|k| !declared.is_some_and(|d| d.contains_key(k.as_str())))
        {
            return Err(ToolError::UnexpectedArgument {
                tool,
                argument: extra.clone(),
            });
        }
        Ok(Args { tool, map })
    }

    fn get(&self, name: &str) -> Option<&'a Value> {
        self.map.get(name).filter(|v| !v.is_null())
    }

    fn invalid(&self, argument: &'static str, problem: impl Into<String>) -> ToolError {
        ToolError::InvalidArgument {
            tool: self.tool,
            argument,
            problem: problem.into(),
        }
    }

    pub fn req_str(&self, name: &'static str) -> Result<String, ToolError> {
        self.opt_str(name)?.ok_or(ToolError::MissingArgument {
            tool: self.tool,
            argument: name,
        })
    }

    pub fn opt_str(&self, name: &'static str) -> Result<Option<String>, ToolError> {
        match self.get(name) {
            None => Ok(None),
            Some(Value::String(s)) => Ok(Some(s.clone())),
            Some(_) => Err(self.invalid(name, "expected a string")),
        }
    }

    pub fn req_obj(&self, name: &'static str) -> Result<JsonObject, ToolError> {
        self.opt_obj(name)?.ok_or(ToolError::MissingArgument {
            tool: self.tool,
            argument: name,
        })
    }

    pub fn opt_obj(&self, name: &'static str) -> Result<Option<JsonObject>, ToolError> {
        match self.get(name) {
            None => Ok(None),
            Some(Value::Object(o)) => Ok(Some(o.clone())),
            Some(_) => Err(self.invalid(name, "expected an object")),
        }
    }

    pub fn opt_bool(&self, name: &'static str, default: bool) -> Result<bool, ToolError> {
        match self.get(name) {
            None => Ok(default),
            Some(Value::Bool(b)) => Ok(*b),
            Some(_) => Err(self.invalid(name, "expected true or false")),
        }
    }

    /// A whole number from 0 to `max`.
    pub fn opt_count(&self, name: &'static str, default: u64, max: u64) -> Result<u64, ToolError> {
        match self.get(name) {
            None => Ok(default),
            Some(v) => match v.as_u64() {
                Some(n) if n <= max => Ok(n),
                _ => Err(self.invalid(name, format!("expected a whole number from 0 to {max}"))),
            },
        }
    }

    /// A number from 0 to 1.
    pub fn opt_fraction(&self, name: &'static str, default: f64) -> Result<f64, ToolError> {
        match self.get(name) {
            None => Ok(default),
            Some(v) => match v.as_f64() {
                Some(x) if (0.0..=1.0).contains(&x) => Ok(x),
                _ => Err(self.invalid(name, "expected a number from 0 to 1")),
            },
        }
    }

    pub fn opt_str_list(&self, name: &'static str) -> Result<Option<Vec<String>>, ToolError> {
        match self.get(name) {
            None => Ok(None),
            Some(Value::Array(items)) => items
                .iter()
                .map(|i| match i {
                    Value::String(s) => Ok(s.clone()),
                    _ => Err(self.invalid(name, "expected a list of strings")),
                })
                .collect::<Result<Vec<_>, _>>()
                .map(Some),
            Some(_) => Err(self.invalid(name, "expected a list of strings")),
        }
    }
}
