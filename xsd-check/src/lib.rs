//! Checks an XML document against an XML Schema with libxml2 (what `xmllint --schema` does),
//! compiled from source by cargo, so that the test command needs nothing but a Rust toolchain
//! and a C compiler. The only crate of the workspace that calls C: four calls in, four frees out,
//! behind one safe function.

// Links the static zlib that libxml2's archive refers to.
use libz_sys as _;

use std::ffi::{c_int, CString};

/// `Ok(())` when `xml` is valid against the schema `xsd`; otherwise what is wrong in one line
/// (libxml2 prints each violation, with its line, on standard error, which a failed test shows).
pub fn validate(xsd: &[u8], xml: &[u8]) -> Result<(), String> {
    let len = |bytes: &[u8]| c_int::try_from(bytes.len()).map_err(|_| "too large".to_owned());
    let (xsd_len, xml_len) = (len(xsd)?, len(xml)?);
    let name = CString::new("document.xml").expect("no NUL in a constant");
    // SAFETY: every pointer passed is either one libxml2 returned (checked for NULL before use)
    // or a slice/CString that outlives the call; each object is freed once, in reverse order of
    // creation, and none escapes this function.
    unsafe {
        let parser = xml2_sys::xmlSchemaNewMemParserCtxt(xsd.as_ptr().cast(), xsd_len);
        if parser.is_null() {
            return Err("the schema could not be read".into());
        }
        let schema = xml2_sys::xmlSchemaParse(parser);
        xml2_sys::xmlSchemaFreeParserCtxt(parser);
        if schema.is_null() {
            return Err("the schema is not a valid XML Schema".into());
        }
        let doc = xml2_sys::xmlReadMemory(
            xml.as_ptr().cast(),
            xml_len,
            name.as_ptr(),
            std::ptr::null(),
            0,
        );
        if doc.is_null() {
            xml2_sys::xmlSchemaFree(schema);
            return Err("the document is not well-formed XML".into());
        }
        let context = xml2_sys::xmlSchemaNewValidCtxt(schema);
        let result = if context.is_null() {
            Err("libxml2 could not start a validation".into())
        } else {
            let rc = xml2_sys::xmlSchemaValidateDoc(context, doc);
            xml2_sys::xmlSchemaFreeValidCtxt(context);
            match rc {
                0 => Ok(()),
                n if n > 0 => Err("the document is not valid against the schema".into()),
                _ => Err("libxml2 failed while validating".into()),
            }
        };
        xml2_sys::xmlFreeDoc(doc);
        xml2_sys::xmlSchemaFree(schema);
        result
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const XSD: &str = r#"<xs:schema xmlns:xs="http://www.w3.org/2001/XMLSchema">
      <xs:element name="amount">
        <xs:simpleType>
          <xs:restriction base="xs:decimal"><xs:fractionDigits value="2"/></xs:restriction>
        </xs:simpleType>
      </xs:element>
    </xs:schema>"#;

    #[test]
    fn a_valid_document_passes_and_an_invalid_or_broken_one_does_not() {
        assert_eq!(validate(XSD.as_bytes(), b"<amount>600.00</amount>"), Ok(()));
        assert!(validate(XSD.as_bytes(), b"<amount>600.001</amount>").is_err());
        assert!(validate(XSD.as_bytes(), b"<amount>600.00").is_err());
        assert!(validate(b"not a schema", b"<amount>1</amount>").is_err());
    }
}
