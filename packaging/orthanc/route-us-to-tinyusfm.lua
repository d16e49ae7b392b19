-- Orthanc routing rule: every new ultrasound instance goes to the TinyUSFM node, registered in Orthanc's
-- configuration as the DICOM modality "tinyusfm" ("DicomModalities": {"tinyusfm": ["TINYUSFM", "<node host>", 11112]}).
-- Results come back from the node (Modality SEG / SR), so they are never routed again.
-- Load it with "LuaScripts": ["/etc/orthanc/route-us-to-tinyusfm.lua"] in Orthanc's configuration.
function OnStoredInstance(instanceId, tags, metadata, origin)
   if tags['Modality'] == 'US' then
      SendToModality(instanceId, 'tinyusfm')
   end
end
